import Foundation
import ProvisionModel

/// How the control state maps onto the store's records: a dataset is one record, a product
/// two (its spec and build state; its status).
enum ControlRecords {
    /// A record that cannot be read: the store was written by something else, or damaged
    /// inside a commit whose checksum held.
    struct Unreadable: Error, CustomStringConvertible {
        var key: ObjectKey
        var cause: String

        var description: String { "the control store's record \(key) cannot be read: \(cause)" }
    }

    static func encode<Value: Encodable>(_ value: Value) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // Encoding these types cannot fail: no floating-point infinities, string keys only.
        return Array(try! encoder.encode(value))
    }

    static func decode<Value: Decodable>(_ type: Value.Type, _ record: VersionedRecord, key: ObjectKey) throws -> Value {
        do {
            return try JSONDecoder().decode(type, from: Data(record.value))
        } catch {
            throw Unreadable(key: key, cause: "\(error)")
        }
    }

    static func state(from snapshot: StoreSnapshot) throws -> ControlState {
        var state = ControlState()
        var statuses: [String: ProductStatus] = [:]
        for (key, record) in snapshot.records {
            switch key.kind {
            case .dataset:
                var dataset = try decode(StoredDataset.self, record, key: key)
                dataset.resourceVersion = record.resourceVersion
                state.datasets[key.name] = dataset
            case .product:
                var product = try decode(StoredProduct.self, record, key: key)
                product.resourceVersion = record.resourceVersion
                state.products[key.name] = product
            case .productStatus:
                statuses[key.name] = try decode(ProductStatus.self, record, key: key)
            case .token:
                var token = try decode(StoredToken.self, record, key: key)
                token.resourceVersion = record.resourceVersion
                state.tokens[key.name] = token
            case .secret:
                var secret = try decode(StoredSecret.self, record, key: key)
                secret.resourceVersion = record.resourceVersion
                state.secrets[key.name] = secret
            case .gitSource:
                var source = try decode(StoredGitSource.self, record, key: key)
                source.resourceVersion = record.resourceVersion
                state.gitSources[key.name] = source
            }
        }
        for (name, status) in statuses { state.products[name]?.status = status }
        return state
    }

    /// The writes that turn `current` into `next` for the named objects, each a
    /// compare-and-swap on the version `current` holds.
    static func writes(from current: ControlState, to next: ControlState, datasets: some Sequence<String>,
                       products: some Sequence<String>, tokens: some Sequence<String> = [String](),
                       secrets: some Sequence<String> = [String](), gitSources: some Sequence<String> = [String]()) -> [RecordWrite]
    {
        var writes: [RecordWrite] = []
        for name in Set(gitSources).sorted() {
            let old = current.gitSources[name], new = next.gitSources[name]
            guard old != new else { continue }
            writes.append(RecordWrite(key: .gitSource(name), value: new.map(encode),
                                      precondition: old.map { .version($0.resourceVersion) } ?? .absent))
        }
        for id in Set(secrets).sorted() {
            let old = current.secrets[id], new = next.secrets[id]
            guard old != new else { continue }
            writes.append(RecordWrite(key: .secret(id), value: new.map(encode),
                                      precondition: old.map { .version($0.resourceVersion) } ?? .absent))
        }
        for name in Set(tokens).sorted() {
            let old = current.tokens[name], new = next.tokens[name]
            guard old != new else { continue }
            writes.append(RecordWrite(key: .token(name), value: new.map(encode),
                                      precondition: old.map { .version($0.resourceVersion) } ?? .absent))
        }
        for name in Set(datasets).sorted() {
            let old = current.datasets[name], new = next.datasets[name]
            guard old != new else { continue }
            writes.append(RecordWrite(key: .dataset(name), value: new.map(encode),
                                      precondition: old.map { .version($0.resourceVersion) } ?? .absent))
        }
        for name in Set(products).sorted() {
            let old = current.products[name], new = next.products[name]
            if let new, let old, new.sameSpecRecord(as: old) {
                // Only the status changed.
            } else if old != nil || new != nil {
                writes.append(RecordWrite(key: .product(name), value: new.map(encode),
                                          precondition: old.map { .version($0.resourceVersion) } ?? .absent))
            }
            if old?.status != new?.status || (old == nil) != (new == nil) {
                writes.append(RecordWrite(key: .productStatus(name), value: new.map { encode($0.status) }, precondition: .none))
            }
        }
        return writes
    }

    /// Makes committed writes current in `state`, with the version they took.
    static func applyCommitted(_ writes: [RecordWrite], from next: ControlState, version: ResourceVersion,
                               to state: inout ControlState)
    {
        for write in writes {
            switch write.key.kind {
            case .dataset:
                state.datasets[write.key.name] = next.datasets[write.key.name]
                state.datasets[write.key.name]?.resourceVersion = version
            case .product:
                let status = state.products[write.key.name]?.status
                state.products[write.key.name] = next.products[write.key.name]
                state.products[write.key.name]?.resourceVersion = version
                // The status is its own record: if it was not written here, the current one stays.
                if let status, !writes.contains(where: { $0.key == .productStatus(write.key.name) }) {
                    state.products[write.key.name]?.status = status
                }
            case .productStatus:
                if let status = next.products[write.key.name]?.status { state.products[write.key.name]?.status = status }
            case .token:
                state.tokens[write.key.name] = next.tokens[write.key.name]
                state.tokens[write.key.name]?.resourceVersion = version
            case .secret:
                state.secrets[write.key.name] = next.secrets[write.key.name]
                state.secrets[write.key.name]?.resourceVersion = version
            case .gitSource:
                state.gitSources[write.key.name] = next.gitSources[write.key.name]
                state.gitSources[write.key.name]?.resourceVersion = version
            }
        }
    }

    /// Moves a data directory's `state.json` (one JSON document of everything, from before the
    /// store kept records) into an empty store, in one commit, then renames it out of the way.
    /// A crash before the rename migrates it again: the store is empty until the commit is whole.
    static func migrateLegacyState(at path: String, into store: EmbeddedControlStore) throws -> Bool {
        guard let data = FileManager.default.contents(atPath: path) else { return false }
        guard store.snapshotNow().records.isEmpty else { return false }
        let legacy = try JSONDecoder().decode(LegacyControlState.self, from: data)
        var state = ControlState()
        state.datasets = legacy.datasets
        state.products = legacy.products.mapValues(\.stored)
        let writes = Self.writes(from: ControlState(), to: state, datasets: state.datasets.keys, products: state.products.keys)
        _ = try store.commitNow(writes, durable: true)
        guard rename(path, path + ".migrated") == 0 else { throw POSIXError.current }
        return true
    }

    /// `state.json` as it was: products with their status inline.
    private struct LegacyControlState: Decodable {
        var datasets: [String: StoredDataset]
        var products: [String: LegacyProduct]
    }

    private struct LegacyProduct: Decodable {
        var stored: StoredProduct

        private struct StatusField: Decodable {
            var status: ProductStatus
        }

        init(from decoder: Decoder) throws {
            stored = try StoredProduct(from: decoder)
            stored.status = try StatusField(from: decoder).status
        }
    }
}
