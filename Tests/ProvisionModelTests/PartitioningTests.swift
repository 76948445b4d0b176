import Testing
@testable import ProvisionModel

@Suite struct PartitioningTests {
    /// Apache Kafka's own `UtilsTest.testMurmur2` vectors: what the Java producer computes.
    @Test(arguments: [
        ("21", -973_932_308), ("foobar", -790_332_482), ("a-little-bit-long-string", -985_981_536),
        ("a-little-bit-longer-string", -1_486_304_829), ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
        ("abc", 479_470_107),
    ])
    func murmur2IsKafkas(_ key: String, _ expected: Int32) {
        #expect(KafkaPartitioner.murmur2(Array(key.utf8)) == expected)
    }

    @Test func aKeysPartitionIsThePositiveHashModuloTheCount() {
        // toPositive(-973932308) = 1173551340; 1173551340 % 6 = 0, % 7 = 4.
        #expect(KafkaPartitioner.partition(forKey: Array("21".utf8), partitions: 6) == 1_173_551_340 % 6)
        #expect(KafkaPartitioner.partition(forKey: Array("21".utf8), partitions: 7) == 1_173_551_340 % 7)
        #expect(KafkaPartitioner.partition(forKey: Array("abc".utf8), partitions: 10) == 479_470_107 % 10)
        #expect(KafkaPartitioner.partition(forKey: [], partitions: 1) == 0)
        // Every partition gets keys.
        let used = Set((0..<600).map { KafkaPartitioner.partition(forKey: Array("order-\($0)".utf8), partitions: 6) })
        #expect(used == Set(0..<6))
    }

    private let productOverPartitionedStreams = """
        apiVersion: provision/v1
        kind: Dataset
        metadata: {name: orders}
        spec: {topic: orders, key: order_id, partitions: 6, schema: {order_id: string, customer_id: string}}
        ---
        apiVersion: provision/v1
        kind: Dataset
        metadata: {name: payments}
        spec: {topic: payments, schema: {payment_id: string, customer_id: string}}
        ---
        apiVersion: provision/v1
        kind: DataProduct
        metadata: {name: paid, team: risk}
        spec:
          from: orders
          join:
            - {dataset: payments, on: customer_id, within: 1h, as: payment}
          sink: {file: {path: paid.jsonl}}
        """

    @Test func aDatasetNamesItsPartitionCount() {
        let result = SpecLoader.load([SpecFile(name: "orders.yaml", content: String(productOverPartitionedStreams.split(separator: "---")[0]))])
        #expect(result.errors.isEmpty)
        guard case .dataset(let dataset, _)? = result.documents.first else { Issue.record("no dataset"); return }
        #expect(dataset.spec.partitions == 6)
    }

    @Test(arguments: ["0", "1025", "six", "-2"])
    func aPartitionCountOutOfRangeIsLocated(_ count: String) {
        let yaml = "apiVersion: provision/v1\nkind: Dataset\nmetadata: {name: trades}\nspec: {topic: trades, partitions: \(count), schema: {id: string}}\n"
        let result = SpecLoader.load([SpecFile(name: "trades.yaml", content: yaml)])
        #expect(result.errors.map(\.description) == ["trades.yaml:4:35: spec.partitions: '\(count)' is not a whole number from 1 to 1024"])
    }

    /// A compacted dataset (a table whose history no product needs) needs a key, and is joined
    /// by its current rows only: as of an event's time or in a window, the answer would
    /// change whenever the broker compacted it.
    @Test func aCompactedDatasetNeedsAKeyAndIsJoinedByItsLatestRows() {
        let keyless = "apiVersion: provision/v1\nkind: Dataset\nmetadata: {name: rates}\nspec: {topic: rates, compacted: true, schema: {id: string}}\n"
        #expect(SpecLoader.load([SpecFile(name: "rates.yaml", content: keyless)]).errors.map(\.description)
                == ["rates.yaml:4:33: spec.compacted: a compacted topic keeps each key's latest record: the dataset needs a key (spec.key)"])
        let unclear = keyless.replacingOccurrences(of: "compacted: true", with: "compacted: often, key: id")
        #expect(SpecLoader.load([SpecFile(name: "rates.yaml", content: unclear)]).errors.map(\.description)
                == ["rates.yaml:4:33: spec.compacted: expected true or false"])

        let specs = """
            apiVersion: provision/v1
            kind: Dataset
            metadata: {name: orders}
            spec: {topic: orders, time: placed_at, schema: {order_id: string, customer_id: string, placed_at: timestamp}}
            ---
            apiVersion: provision/v1
            kind: Dataset
            metadata: {name: customers}
            spec: {topic: customers, key: customer_id, compacted: true, schema: {customer_id: string, tier: string}}
            ---
            apiVersion: provision/v1
            kind: DataProduct
            metadata: {name: tiers, team: risk}
            spec:
              from: orders
              join:
                - {dataset: customers, on: customer_id, as: customer, mode: latest}
              sink: {file: {path: tiers.jsonl}}
            """
        let latest = SpecLoader.load([SpecFile(name: "tiers.yaml", content: specs)])
        #expect(latest.errors.isEmpty, "\(latest.errors)")
        guard case .dataset(let customers, _)? = latest.documents.dropFirst().first else { Issue.record("no dataset"); return }
        #expect(customers.spec.isCompacted)
        let asOf = SpecLoader.load([SpecFile(name: "tiers.yaml", content: specs.replacingOccurrences(of: ", mode: latest", with: ""))])
        #expect(asOf.errors.map(\.description) == [
            "tiers.yaml:17:17: spec.join[0].dataset: dataset 'customers' is compacted (only each key's latest record is kept), so it is joined by its current rows: mode: latest, not as of the event's time",
        ])
    }

    @Test func aWindowedJoinReadsPartitionedStreams() {
        let result = SpecLoader.load([SpecFile(name: "paid.yaml", content: productOverPartitionedStreams)])
        #expect(result.errors.isEmpty, "\(result.errors)")
        #expect(result.documents.count == 3)
    }
}
