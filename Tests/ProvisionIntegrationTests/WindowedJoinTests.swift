import Foundation
import Testing
import ProvisionLog
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
                                        time: time - hour / 2 + next(5 * hour / 2)))
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

    /// For each order, every payment is looked at: those of the order within an hour either
    /// way, in time order, each make a row; a left join keeps an unpaid order once.
    func expectedRows(left: Bool) -> [NSDictionary] {
        orders.flatMap { order -> [NSDictionary] in
            let matched = payments.enumerated()
                .filter { $0.element.order == order.id && abs($0.element.time - order.time) <= Self.hour }
                .sorted { ($0.element.time, $0.offset) < ($1.element.time, $1.offset) }
                .map(\.element)
            if matched.isEmpty {
                return left ? [["order_id": order.id, "payment_id": NSNull(), "paid": NSNull(),
                                "placed_at": JoinWorld.timestamp(order.time)] as NSDictionary] : []
            }
            return matched.map { payment in
                ["order_id": order.id, "payment_id": payment.id, "paid": payment.cents,
                 "placed_at": JoinWorld.timestamp(order.time)] as NSDictionary
            }
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

func paidOrdersSpec(type: String) -> String {
    """
    apiVersion: provision/v1
    kind: DataProduct
    metadata: {name: paid-orders, team: finance}
    spec:
      from: orders
      join:
        - {dataset: payments, on: order_id, within: 1h, as: payment, type: \(type)}
      select: {order_id: order_id, payment_id: payment.payment_id, paid: payment.amount, placed_at: placed_at}
      sink: {file: {path: paid-orders.jsonl}}
    """
}

@Suite(.serialized, integrationTimeLimit) struct WindowedJoinTests {
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
        _ = try await server.waitForProduct("paid-orders") { $0.phase == "Live" }
        let expected = world.expectedRows(left: type == "left")
        let rows = try outputRows(server.fileRoot + "/paid-orders.jsonl")
        #expect(rows.count == expected.count)
        #expect(rows == expected)
        // The data has orders with two matches, with none, and payments outside the window.
        #expect(Set(rows.map { $0["order_id"] as! String }).count < rows.count)
        #expect(expected.count != world.payments.count)
    }

    /// Live, an order waits for its window to close, not just for `maxDelay`: a payment that
    /// comes later than `maxDelay` but inside the window is still its match.
    @Test func aLiveOrderWaitsUntilItsWindowHasClosed() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop(signal: SIGKILL) }
        let spec = paidOrdersSpec(type: "left").replacingOccurrences(of: "within: 1h", with: "within: 20s, maxDelay: 500ms")
        #expect(try server.ctl(["apply", "-f", try writeSpecs(paymentsCatalogSpec, spec, to: server.dataDirectory + "-specs")]).status == 0)
        _ = try await server.waitForProduct("paid-orders") { $0.phase == "Live" }
        let now = Int64(Date().timeIntervalSince1970 * 1000) / 1000 * 1000
        let order = JoinWorld.Order(id: "o-1", customer: "c-1", amountCents: 100, time: now)
        #expect(try server.ctl(["produce", "orders", "--file", "-"], input: Data(JoinWorld.orderLines([order]).utf8)).status == 0)
        try await Task.sleep(for: .seconds(2))
        #expect(try outputRows(server.fileRoot + "/paid-orders.jsonl").isEmpty, "the order went out before its window closed")
        let payment = PaymentWorld.Payment(id: "p-1", order: "o-1", cents: 100, time: now + 10_000)
        #expect(try server.ctl(["produce", "payments", "--file", "-"], input: Data((PaymentWorld.paymentValue(payment) + "\n").utf8)).status == 0)
        _ = try await server.waitForProduct("paid-orders", timeout: .seconds(60)) { $0.recordsWritten == 1 }
        let rows = try outputRows(server.fileRoot + "/paid-orders.jsonl")
        #expect(rows.count == 1)
        #expect(rows.first?["payment_id"] as? String == "p-1")
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
