import Foundation
import Testing
import ProvisionLog
import ProvisionModel
#if canImport(Glibc)
import Glibc
#endif

/// Orders and their payments, some early, most late, some outside the window, some orders
/// unpaid; the expected windowed join is computed from them by brute force.
struct PaymentWorld {
    struct Payment {
        var id: String
        var order: String
        var cents: Int
        var time: Int64
    }

    var orders: [JoinWorld.Order]
    /// In log order, which is time order.
    var payments: [Payment]

    static let hour: Int64 = 3_600_000

    static func generate(orders orderCount: Int, from start: Int64, minutesApart: Int64, seed: UInt64) -> PaymentWorld {
        var state = seed
        func next(_ bound: Int64) -> Int64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int64((state >> 33) % UInt64(bound))
        }
        var orders: [JoinWorld.Order] = []
        var payments: [Payment] = []
        for index in 0..<orderCount {
            let time = start + Int64(index) * minutesApart * 60_000
            let order = JoinWorld.Order(id: "o-\(index)", customer: "c-\(next(100))", amountCents: Int(next(100_000)), time: time)
            orders.append(order)
            // 0, 1 or 2 payments from half an hour before to two hours after the order.
            for payment in 0..<next(3) {
                payments.append(Payment(id: "p-\(index)-\(payment)", order: order.id, cents: order.amountCents,
                                        time: (time - hour / 2 + next(5 * hour / 2)) / 1000 * 1000))
            }
        }
        payments = payments.enumerated().sorted { ($0.element.time, $0.offset) < ($1.element.time, $1.offset) }.map(\.element)
        return PaymentWorld(orders: orders, payments: payments)
    }

    static func paymentValue(_ payment: Payment) -> String {
        #"{"payment_id":"\#(payment.id)","order_id":"\#(payment.order)","amount":\#(payment.cents),"paid_at":"\#(JoinWorld.timestamp(payment.time))"}"#
    }

    func seed(_ server: ServerProcess) async throws {
        try await seedTopics(server, [
            ("payments", payments.map { payment in
                LogRecord(key: Array(payment.id.utf8), value: Array(Self.paymentValue(payment).utf8), timestamp: payment.time)
            }),
            ("orders", JoinWorld.orderRecords(orders)),
        ])
    }

    static func paymentLines(_ payments: some Sequence<Payment>) -> String {
        payments.map(paymentValue).joined(separator: "\n") + "\n"
    }

    /// The product's rows by brute force, in the documented order. Both topics are in time
    /// order, so the records are processed as one sequence sorted by (time, orders before
    /// payments, log order). For each order every payment is looked at: those of the order
    /// within `within` either way make a pair, emitted at the step of whichever of the two
    /// comes later, after earlier partners (by time, then sequence). A left join's unpaid
    /// order is emitted once stream time passes its time + within + grace: after the pairs of
    /// the step whose record first does, or at the end.
    ///
    /// Over partitioned topics a tie goes to the lower partition: `orderPartitions` and
    /// `paymentPartitions` give each record's (none: all in one).
    func expectedRows(left: Bool, within: Int64 = PaymentWorld.hour, grace: Int64 = 5_000,
                      orderPartitions: [Int] = [], paymentPartitions: [Int] = []) -> [NSDictionary] {
        // Positions in the merged sequence.
        var steps: [(time: Int64, input: Int, partition: Int, index: Int)] = orders.indices.map {
            (orders[$0].time, 0, orderPartitions.isEmpty ? 0 : orderPartitions[$0], $0)
        }
        steps += payments.indices.map { (payments[$0].time, 1, paymentPartitions.isEmpty ? 0 : paymentPartitions[$0], $0) }
        steps.sort { ($0.time, $0.input, $0.partition, $0.index) < ($1.time, $1.input, $1.partition, $1.index) }
        var orderStep: [Int: Int] = [:], paymentStep: [Int: Int] = [:]
        for (step, entry) in steps.enumerated() {
            if entry.input == 0 { orderStep[entry.index] = step } else { paymentStep[entry.index] = step }
        }
        var byOrder: [String: [Int]] = [:]
        for (index, payment) in payments.enumerated() { byOrder[payment.order, default: []].append(index) }
        var keyed: [(key: [Int64], row: NSDictionary)] = []
        for (orderIndex, order) in orders.enumerated() {
            let matched = (byOrder[order.id] ?? []).filter { abs(payments[$0].time - order.time) <= within }
            for paymentIndex in matched {
                let payment = payments[paymentIndex]
                let (o, p) = (orderStep[orderIndex]!, paymentStep[paymentIndex]!)
                let partner: [Int64] = o > p ? [payment.time, Int64(p)] : [order.time, Int64(o)]
                keyed.append(([Int64(max(o, p)), 0] + partner, ["order_id": order.id, "payment_id": payment.id, "paid": payment.cents,
                                                                 "placed_at": JoinWorld.timestamp(order.time)] as NSDictionary))
            }
            if matched.isEmpty && left {
                // The first step past the window's end + grace: a binary search, the steps being in time order.
                var (low, high) = (0, steps.count)
                while low < high {
                    let middle = (low + high) / 2
                    if steps[middle].time > order.time + within + grace { high = middle } else { low = middle + 1 }
                }
                let closing = low
                keyed.append(([Int64(closing), 1, order.time, Int64(orderStep[orderIndex]!)],
                              ["order_id": order.id, "payment_id": NSNull(), "paid": NSNull(),
                               "placed_at": JoinWorld.timestamp(order.time)] as NSDictionary))
            }
        }
        keyed.sort { $0.key.lexicographicallyPrecedes($1.key) }
        return keyed.map(\.row)
    }
}

extension ServerProcess {
    /// Orders, then payments, through `provisionctl produce`.
    func produce(orders: [JoinWorld.Order] = [], payments: [PaymentWorld.Payment] = []) throws {
        if !orders.isEmpty {
            let result = try ctl(["produce", "orders", "--file", "-"], input: Data(JoinWorld.orderLines(orders).utf8))
            guard result.status == 0 else { throw Failure("produce orders: \(result.errorOutput)") }
        }
        if !payments.isEmpty {
            let result = try ctl(["produce", "payments", "--file", "-"], input: Data(PaymentWorld.paymentLines(payments).utf8))
            guard result.status == 0 else { throw Failure("produce payments: \(result.errorOutput)") }
        }
    }
}

let paymentsCatalogSpec = joinOrdersDatasetSpec + """

    ---
    apiVersion: provision/v1
    kind: Dataset
    metadata: {name: payments, owner: finance}
    spec:
      topic: payments
      key: payment_id
      time: paid_at
      schema: {payment_id: string, order_id: string, amount: integer, paid_at: timestamp}
    """

func paidOrdersSpec(type: String, idleTimeout: String? = nil) -> String {
    """
    apiVersion: provision/v1
    kind: DataProduct
    metadata: {name: paid-orders, team: finance}
    spec:
      from: orders
      join:
        - {dataset: payments, on: order_id, within: 1h, as: payment, type: \(type)\(idleTimeout.map { ", idleTimeout: \($0)" } ?? "")}
      select: {order_id: order_id, payment_id: payment.payment_id, paid: payment.amount, placed_at: placed_at}
      sink: {file: {path: paid-orders.jsonl}}
    """
}

@Suite(.serialized, .timeLimit(.minutes(8))) struct WindowedJoinTests {
    static let start: Int64 = 1_767_225_600_000

    @Test(arguments: ["inner", "left"])
    func windowedJoinEqualsTheBruteForceReference(type: String) async throws {
        let world = PaymentWorld.generate(orders: 6_000, from: Self.start, minutesApart: 7, seed: 31)
        let server = ServerProcess()
        try await world.seed(server)
        try await server.start()
        defer { server.stop(signal: SIGKILL) }
        let applied = try server.ctl(["apply", "-f", try writeSpecs(paymentsCatalogSpec, paidOrdersSpec(type: type), to: server.dataDirectory + "-specs")])
        #expect(applied.status == 0, "\(applied.errorOutput)")
        let expected = world.expectedRows(left: type == "left")
        // The last unpaid orders go out when the quiet join's windows close (idle timeout).
        _ = try await server.waitForProduct("paid-orders") { $0.phase == "Live" && $0.recordsWritten == expected.count }
        let rows = try outputRows(server.fileRoot + "/paid-orders.jsonl")
        #expect(rows.count == expected.count)
        if let first = zip(rows, expected).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset {
            Issue.record("row \(first) differs: \(rows[max(0, first - 2)...min(first + 3, rows.count - 1)]) expected \(expected[max(0, first - 2)...min(first + 3, expected.count - 1)])")
        }
        // The data has orders with two matches, with none, and payments outside the window.
        #expect(Set(rows.map { $0["order_id"] as! String }).count < rows.count)
        #expect(expected.count != world.payments.count)
    }

    /// The same records give the same file, byte for byte, whether they are in the log at
    /// apply or arrive live in slices, one stream entirely before the other or interleaved,
    /// with event times hours old (a replay, a late feed).
    @Test(arguments: ["inner", "left"])
    func liveSlicesOfOldEventsGiveTheBackfillsOutput(type: String) async throws {
        let hoursAgo = (Int64(Date().timeIntervalSince1970 * 1000) - 30 * PaymentWorld.hour) / 60_000 * 60_000
        let world = PaymentWorld.generate(orders: 1_500, from: hoursAgo, minutesApart: 1, seed: 33)
        let expected = world.expectedRows(left: type == "left")
        // A generous idle timeout: a slice waits for the other stream's next one, however
        // slowly a loaded machine produces it.
        let spec = paidOrdersSpec(type: type, idleTimeout: "10s")

        func run(_ arrive: ((ServerProcess) throws -> Void)?) async throws -> Data {
            let server = ServerProcess()
            if arrive == nil { try await world.seed(server) }
            try await server.start()
            defer { server.stop(signal: SIGKILL) }
            let applied = try server.ctl(["apply", "-f", try writeSpecs(paymentsCatalogSpec, spec, to: server.dataDirectory + "-specs")])
            #expect(applied.status == 0, "\(applied.errorOutput)")
            try arrive?(server)
            _ = try await server.waitForProduct("paid-orders", timeout: .seconds(240)) { $0.recordsWritten == expected.count }
            let product = try await server.fetchProduct("paid-orders")
            #expect(product?.status["lateRecords"] as? Int ?? 0 == 0)
            return FileManager.default.contents(atPath: server.fileRoot + "/paid-orders.jsonl") ?? Data()
        }

        let backfill = try await run(nil)
        #expect(try parsedRows(backfill) == expected)
        let ordersFirst = try await run { server in
            try server.produce(orders: world.orders)
            try server.produce(payments: world.payments)
        }
        #expect(ordersFirst == backfill, "orders entirely before their payments")
        let interleaved = try await run { server in
            // Ten slices of each, by time: an orders slice, then the payments of the same hours.
            let span = world.orders.last!.time - world.orders.first!.time
            for slice in 0..<10 {
                let from = world.orders.first!.time + span * Int64(slice) / 10
                let until = slice == 9 ? Int64.max : world.orders.first!.time + span * Int64(slice + 1) / 10
                try server.produce(orders: world.orders.filter { $0.time >= from && $0.time < until })
                try server.produce(payments: world.payments.filter { ($0.time >= from || slice == 0) && $0.time < until })
            }
        }
        #expect(interleaved == backfill, "interleaved slices")
    }

    /// SIGKILL once the first windows have been written: the restarted product rebuilds its
    /// windows from both inputs up to the committed offsets and continues with exactly the
    /// rows, in the order, an uninterrupted run writes.
    @Test func killedMidBackfillTheWindowedOutputEqualsTheReference() async throws {
        let world = PaymentWorld.generate(orders: 150_000, from: Self.start, minutesApart: 1, seed: 34)
        let expected = world.expectedRows(left: true)
        let server = ServerProcess()
        try await world.seed(server)
        // Killed at a chosen moment: after the second batch is committed.
        server.environment["PROVISION_FAILPOINTS"] = "pipeline.batch.committed=kill@2"
        try await server.start()
        defer { server.stop(signal: SIGKILL) }
        let applied = try server.ctl(["apply", "-f", try writeSpecs(paymentsCatalogSpec, paidOrdersSpec(type: "left"), to: server.dataDirectory + "-specs")])
        #expect(applied.status == 0, "\(applied.errorOutput)")
        try server.waitForFailpoint("pipeline.batch.committed")
        server.environment["PROVISION_FAILPOINTS"] = ""
        try await server.start()
        _ = try await server.waitForProduct("paid-orders", timeout: .seconds(240)) { $0.recordsWritten == expected.count && $0.phase == "Live" }
        let rows = try outputRows(server.fileRoot + "/paid-orders.jsonl")
        #expect(rows.count == expected.count)
        #expect(rows == expected)
    }

    /// Orders in 6 partitions and payments in 4, merged in event time over all of them: the
    /// rows are the reference's, in its order (a tie goes to the lower partition, which
    /// kafka-python's partitioner names), whether the records were there at once, came live in
    /// interleaved slices, or the server was killed mid-backfill.
    @Test(.enabled(if: kafkaPython != nil || runningInCI, "needs kafka-python, which scripts/test installs"))
    func aWindowedJoinOverPartitionedStreamsIsTheSameAtOnceInSlicesAndAfterAKill() async throws {
        let hoursAgo = (Int64(Date().timeIntervalSince1970 * 1000) - 30 * PaymentWorld.hour) / 60_000 * 60_000
        let world = PaymentWorld.generate(orders: 3_000, from: hoursAgo, minutesApart: 1, seed: 35)
        let expected = world.expectedRows(left: true, orderPartitions: try kafkaPartitions(of: world.orders.map(\.id), partitions: 6),
                                          paymentPartitions: try kafkaPartitions(of: world.payments.map(\.id), partitions: 4))
        let catalog = paymentsCatalogSpec.replacingOccurrences(of: "key: order_id", with: "key: order_id\n  partitions: 6")
            .replacingOccurrences(of: "key: payment_id", with: "key: payment_id\n  partitions: 4")
        let product = paidOrdersSpec(type: "left", idleTimeout: "10s")
        var files: [Data] = []
        for arrival in ["at once", "in slices", "killed"] {
            let server = ServerProcess()
            defer { server.stop(signal: SIGKILL) }
            if arrival == "killed" {
                server.arguments = ["--batch-records", "200"]
                server.environment["PROVISION_FAILPOINTS"] = "pipeline.batch.committed=kill@3"
            }
            try await server.start()
            #expect(try server.ctl(["apply", "-f", try writeSpecs(catalog, to: server.dataDirectory + "-catalog")]).status == 0)
            let productFile = try writeSpecs(product, to: server.dataDirectory + "-product")
            if arrival == "in slices" {
                #expect(try server.ctl(["apply", "-f", productFile]).status == 0)
                let span = world.orders.last!.time - world.orders.first!.time
                for slice in 0..<10 {
                    let from = world.orders.first!.time + span * Int64(slice) / 10
                    let until = slice == 9 ? Int64.max : world.orders.first!.time + span * Int64(slice + 1) / 10
                    try server.produce(orders: world.orders.filter { $0.time >= from && $0.time < until },
                                payments: world.payments.filter { ($0.time >= from || slice == 0) && $0.time < until })
                }
            } else {
                try server.produce(orders: world.orders, payments: world.payments)
                #expect(try server.ctl(["apply", "-f", productFile]).status == 0)
            }
            if arrival == "killed" {
                try server.waitForFailpoint("pipeline.batch.committed")
                server.environment["PROVISION_FAILPOINTS"] = ""
                #expect(try outputRows(server.fileRoot + "/paid-orders.jsonl").count < expected.count)
                try await server.start()
            }
            let state = try await server.waitForProduct("paid-orders", timeout: .seconds(240)) {
                $0.recordsWritten == expected.count && $0.phase == "Live"
            }
            #expect((state.status["checkpoint"] as? [String: Any])?.count == 6)
            #expect(state.status["lateRecords"] as? Int ?? 0 == 0, "\(arrival)")
            let rows = try outputRows(server.fileRoot + "/paid-orders.jsonl")
            #expect(rows.count == expected.count, "\(arrival)")
            if let first = zip(rows, expected).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset {
                Issue.record("\(arrival): row \(first) differs: \(rows[first]) expected \(expected[first])")
            }
            files.append(FileManager.default.contents(atPath: server.fileRoot + "/paid-orders.jsonl") ?? Data())
        }
        #expect(files[1] == files[0], "in slices, the file differs from the records read at once")
        #expect(files[2] == files[0], "after a kill, the file differs from the records read at once")
    }

    /// Live, an inner pair goes out as soon as both sides have arrived, not when the window
    /// closes; a payment later than `maxDelay` but inside the window is still the order's
    /// match; and a record older than stream time minus `maxDelay` is late: counted and
    /// dead-lettered with the reason, never dropped silently.
    @Test func aLivePairGoesOutWhenBothSidesHaveArrivedAndLateRecordsAreDeadLettered() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop(signal: SIGKILL) }
        let spec = paidOrdersSpec(type: "inner").replacingOccurrences(of: "within: 1h", with: "within: 1h, maxDelay: 1m, idleTimeout: 500ms")
        #expect(try server.ctl(["apply", "-f", try writeSpecs(paymentsCatalogSpec, spec, to: server.dataDirectory + "-specs")]).status == 0)
        _ = try await server.waitForProduct("paid-orders") { $0.phase == "Live" }
        let now = Int64(Date().timeIntervalSince1970 * 1000) / 1000 * 1000
        let order = JoinWorld.Order(id: "o-1", customer: "c-1", amountCents: 100, time: now)
        #expect(try server.ctl(["produce", "orders", "--file", "-"], input: Data(JoinWorld.orderLines([order]).utf8)).status == 0)
        // Two minutes later in event time (past maxDelay, inside the hour's window).
        let payment = PaymentWorld.Payment(id: "p-1", order: "o-1", cents: 100, time: now + 120_000)
        #expect(try server.ctl(["produce", "payments", "--file", "-"], input: Data(PaymentWorld.paymentLines([payment]).utf8)).status == 0)
        // Far sooner than the hour the window lasts.
        _ = try await server.waitForProduct("paid-orders", timeout: .seconds(60)) { $0.recordsWritten == 1 }
        let rows = try outputRows(server.fileRoot + "/paid-orders.jsonl")
        #expect(rows.count == 1)
        #expect(rows.first?["payment_id"] as? String == "p-1")

        // A payment ten minutes older than stream time: late.
        let late = PaymentWorld.Payment(id: "p-late", order: "o-1", cents: 100, time: now + 120_000 - 600_000)
        #expect(try server.ctl(["produce", "payments", "--file", "-"], input: Data(PaymentWorld.paymentLines([late]).utf8)).status == 0)
        let product = try await server.waitForProduct("paid-orders", timeout: .seconds(60)) {
            ($0.status["lateRecords"] as? Int) == 1 && ($0.status["deadLettered"] as? Int) == 1
        }
        #expect(product.recordsWritten == 1)
        let deadLetters = try server.ctl(["deadletters", "paid-orders", "--json"])
        #expect(deadLetters.output.contains("late for the windowed join"), "\(deadLetters.output)")
        #expect(deadLetters.output.contains("p-late"), "\(deadLetters.output)")
    }

    /// Four times the input over four times the span holds no more state: the windows
    /// expire. Peak RSS of the server stays within 10%.
    @Test func windowedJoinStateStaysBounded() async throws {
        var peaks: [Int] = []
        for orders in [300_000, 1_200_000] {
            let world = PaymentWorld.generate(orders: orders, from: Self.start, minutesApart: 1, seed: 32)
            let server = ServerProcess()
            try await world.seed(server)
            try await server.start()
            defer { server.stop(signal: SIGKILL) }
            #expect(try server.ctl(["apply", "-f", try writeSpecs(paymentsCatalogSpec, paidOrdersSpec(type: "left"), to: server.dataDirectory + "-specs")]).status == 0)
            _ = try await server.waitForProduct("paid-orders", timeout: .seconds(900)) { $0.phase == "Live" }
            peaks.append(try #require(server.peakResidentKiB))
            try? FileManager.default.removeItem(atPath: server.dataDirectory)
        }
        #expect(Double(peaks[1]) <= Double(peaks[0]) * 1.10, "peak RSS \(peaks[0]) KiB for 1×, \(peaks[1]) KiB for 4×")
    }
}
