import Logging
import ProvisionLog
import ProvisionControl
import ProvisionModel
import ServiceLifecycle

/// Keeps the demo live: a few new orders (and their payments) every second.
struct DemoTrickle: Service {
    let log: any EventLog
    let logger: Logger
    var interval: Duration = .milliseconds(250)

    func run() async throws {
        let orders = TopicPartition(topic: "orders", partition: 0)
        let payments = TopicPartition(topic: "payments", partition: 0)
        var random = SeededRandom(seed: UInt64(Reconciler.now()))
        var index = Int(try await log.endOffset(of: orders))
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let region = DemoData.regions[random.next(below: DemoData.regions.count)]
            // Live, a payment follows its order within seconds.
            let (order, payment) = DemoData.orderRecords(index, customer: random.next(below: DemoData.customerCount), region: region,
                                                         time: Reconciler.now(), paymentDelayMax: 2_000, random: &random)
            try await log.append([order], to: orders)
            if let payment { try await log.append([payment], to: payments) }
            index += 1
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
    }
}
