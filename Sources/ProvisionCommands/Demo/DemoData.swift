import Logging
import ProvisionLog
import ProvisionControl
import ProvisionModel

/// Realistic sample datasets for `serve --demo`: customers, orders and payments over the
/// last 180 days, generated from a fixed seed so every demo looks the same.
enum DemoData {
    static let customerCount = 20_000
    static let orderCount = 300_000
    static let historyDays: Int64 = 180
    static let regions = ["EU", "US", "APAC", "LATAM"]
    static let countries = ["EU": ["DE", "FR", "NL", "ES", "IT"], "US": ["US"], "APAC": ["JP", "SG", "AU"], "LATAM": ["BR", "MX"]]
    static let firstNames = ["Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Ken", "Radia", "Edsger", "Frances", "Tim", "Leslie"]
    static let lastNames = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Turing", "Liskov", "Thompson", "Perlman", "Dijkstra", "Allen", "Lee", "Lamport"]
    static let statuses = ["placed", "placed", "placed", "shipped", "delivered", "cancelled"]
    static let methods = ["card", "card", "card", "sepa", "paypal", "wire"]

    /// Appends the sample data unless the topics already hold records. Returns true if it seeded.
    static func seedIfEmpty(_ log: any EventLog, logger: Logger) async throws -> Bool {
        for topic in ["orders", "customers", "payments"] { try await log.createTopic(topic, partitions: 1) }
        let orders = TopicPartition(topic: "orders", partition: 0)
        guard try await log.endOffset(of: orders) == 0 else { return false }
        var random = SeededRandom(seed: 42)
        let now = Reconciler.now()
        let start = now - historyDays * 86_400_000

        var customers: [LogRecord] = []
        customers.reserveCapacity(customerCount)
        var customerRegion: [String] = []
        for index in 0..<customerCount {
            let region = regions[random.next(below: regions.count)]
            customerRegion.append(region)
            let time = start + Int64(index) * (historyDays * 86_400_000 / Int64(customerCount) / 4)
            customers.append(customerRecord(index, region: region, time: time, random: &random))
        }
        try await log.append(customers, to: TopicPartition(topic: "customers", partition: 0))

        var batch: [LogRecord] = []
        var payments: [LogRecord] = []
        let step = (now - start) / Int64(orderCount)
        for index in 0..<orderCount {
            let time = start + Int64(index) * step + Int64(random.next(below: Int(step)))
            let customer = random.next(below: customerCount)
            let region = customerRegion[customer]
            // No payment in the future: the trickle goes on from now.
            let (order, payment) = orderRecords(index, customer: customer, region: region, time: time,
                                                paymentDelayMax: Int(min(3_600_000, now - time)), random: &random)
            batch.append(order)
            if let payment { payments.append(payment) }
            if batch.count == 50_000 {
                try await log.append(batch, to: orders)
                batch.removeAll(keepingCapacity: true)
            }
        }
        try await log.append(batch, to: orders)
        // A payment stream is in the order payments happen, not in the order of their orders.
        payments = payments.enumerated().sorted { ($0.element.timestamp, $0.offset) < ($1.element.timestamp, $1.offset) }.map(\.element)
        try await log.append(payments, to: TopicPartition(topic: "payments", partition: 0))
        logger.info("demo data seeded", metadata: ["customers": "\(customerCount)", "orders": "\(orderCount)",
                                                   "payments": "\(payments.count)"])
        return true
    }

    static func customerRecord(_ index: Int, region: String, time: TimestampMilliseconds, random: inout SeededRandom) -> LogRecord {
        let id = "c-\(index)"
        let first = firstNames[random.next(below: firstNames.count)]
        let last = lastNames[random.next(below: lastNames.count)]
        let country = countries[region]![random.next(below: countries[region]!.count)]
        let tier = ["standard", "standard", "gold", "platinum"][random.next(below: 4)]
        let value: JSONValue = [
            "customer_id": .string(id), "name": .string("\(first) \(last)"),
            "email": .string("\(first.lowercased()).\(last.lowercased())\(index)@example.com"),
            "country": .string(country), "region": .string(region), "tier": .string(tier),
            "updated_at": .string(Timestamp.format(time)),
        ]
        return record(key: id, value: value, time: time)
    }

    /// An order and, unless it was cancelled, its payment up to `paymentDelayMax` later.
    static func orderRecords(_ index: Int, customer: Int, region: String, time: TimestampMilliseconds,
                             paymentDelayMax: Int = 3_600_000, random: inout SeededRandom) -> (LogRecord, LogRecord?)
    {
        let id = "o-\(index)"
        // Mostly small baskets, a long tail of large ones.
        let cents = random.next(below: 100) < 85 ? 500 + random.next(below: 30_000) : 30_000 + random.next(below: 500_000)
        let amount = DecimalNumber(significand: Int128(cents), scale: 2)!
        let status = statuses[random.next(below: statuses.count)]
        let order: JSONValue = [
            "order_id": .string(id), "customer_id": .string("c-\(customer)"), "amount": .decimal(amount),
            "currency": .string(region == "EU" ? "EUR" : "USD"), "region": .string(region), "status": .string(status),
            "items": .integer(Int64(1 + random.next(below: 6))), "placed_at": .string(Timestamp.format(time)),
        ]
        var payment: LogRecord?
        if status != "cancelled" {
            let paidAt = time + Int64(random.next(below: max(1, paymentDelayMax)))
            let paymentStatus = random.next(below: 100) < 4 ? "failed" : "captured"
            let value: JSONValue = [
                "payment_id": .string("p-\(index)"), "order_id": .string(id), "amount": .decimal(amount),
                "method": .string(methods[random.next(below: methods.count)]), "status": .string(paymentStatus),
                "paid_at": .string(Timestamp.format(paidAt)),
            ]
            payment = record(key: "p-\(index)", value: value, time: paidAt)
        }
        return (record(key: id, value: order, time: time), payment)
    }

    static func record(key: String, value: JSONValue, time: TimestampMilliseconds) -> LogRecord {
        var bytes: [UInt8] = []
        JSONWriter.write(value, into: &bytes)
        return LogRecord(key: Array(key.utf8), value: bytes, timestamp: time)
    }
}

/// SplitMix64: small, fast and the same on every platform.
struct SeededRandom {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func nextUInt64() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var mixed = state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }

    mutating func next(below bound: Int) -> Int {
        Int(nextUInt64() % UInt64(max(bound, 1)))
    }
}
