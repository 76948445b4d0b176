import Metrics
import Prometheus
import ProvisionControl
import ProvisionModel
import Synchronization

/// The metrics `GET /metrics` answers: what swift-metrics recorded (requests, reconciles)
/// and, made at each scrape from the products' status, one series per product. The only
/// label whose values grow with use is the product's name; a deleted product's series go.
final class ProductMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    /// The gauges each product had at the last scrape, to unregister the ones that went.
    private let emitted = Mutex<[String: [Prometheus.Gauge]]>([:])

    init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
    }

    /// swift-metrics reports to this registry; set once per process.
    static let shared: ProductMetrics = {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return ProductMetrics(registry: registry)
    }()

    func scrape(_ reconciler: Reconciler) async -> [UInt8] {
        update(await reconciler.products(as: .development))
        return registry.emitToBuffer()
    }

    func update(_ products: [ProductResource], now: TimestampMilliseconds = Reconciler.systemClock()) {
        var current: [String: [Prometheus.Gauge]] = [:]
        for product in products {
            let name = product.metadata.name
            var gauges: [Prometheus.Gauge] = []
            /// `provision_product_<metric>[_<unit>]`.
            func gauge(_ metric: String, unit: String = "", _ help: String, _ labels: [(String, String)] = [], _ value: Double) {
                let descriptor = MetricNameDescriptor(namespace: "provision", subsystem: "product", metricName: metric, unitName: unit,
                                                      helpText: help)
                let made = registry.makeGauge(descriptor: descriptor, labels: [("product", name)] + labels)
                made.set(value)
                gauges.append(made)
            }
            gauge("info", "A product: its team and sink kind (always 1).",
                  [("team", product.metadata.team ?? ""), ("sink", product.spec.sink.kind)], 1)
            for phase in ProductPhase.allCases {
                gauge("phase", "1 for the product's current phase, 0 for the others.", [("phase", phase.rawValue)],
                      product.status.phase == phase ? 1 : 0)
            }
            for condition in product.status.conditions {
                for status in ["True", "False"] {
                    gauge("condition", "1 when the product's condition has this status.",
                          [("type", condition.type), ("status", status.lowercased())], condition.status == status ? 1 : 0)
                }
            }
            gauge("lag", unit: "records", "Records between the product's checkpoint and the end of its source.", [],
                  Double(product.status.lag))
            gauge("written", unit: "records", "Records the current build delivered to its sink (deletes included).", [],
                  Double(product.status.recordsWritten))
            gauge("read", unit: "records", "Source records the current build read, filtered out ones included.", [],
                  Double(product.status.recordsRead ?? 0))
            if let newest = product.status.newestDeliveredTime.flatMap(Timestamp.parse) {
                gauge("freshness", unit: "seconds", "Now minus the event time of the newest record delivered.", [],
                      Double(max(0, now - newest)) / 1000)
            }
            gauge("dead_lettered", unit: "records", "Records the current build set aside in its dead-letter topic.", [],
                  Double(product.status.deadLettered))
            gauge("failures", "Consecutive failures of the product's pipeline.", [], Double(product.status.failures ?? 0))
            current[name] = gauges
        }
        let gone = emitted.withLock { emitted in
            defer { emitted = current }
            return emitted.flatMap { name, gauges in
                gauges.filter { old in !(current[name] ?? []).contains { $0 === old } }
            }
        }
        for gauge in gone { registry.unregisterGauge(gauge) }
    }
}
