import Foundation
import ProvisionModel
import Synchronization

/// Products as JSON, each encoding reused while the product (spec and status) stays the
/// same: a list of a thousand mostly idle products costs a thousand comparisons and copies,
/// not a thousand encodings. Encoding runs on the request's task, off the reconciler.
final class EncodedProducts: Sendable {
    private struct Entry {
        var resource: ProductResource
        var bytes: [UInt8]
    }

    private let entries = Mutex<[String: Entry]>([:])
    /// Past this many, the cache starts again (deleted products' entries go with it).
    private let entriesMax = 50_000

    func json(_ resource: ProductResource) -> [UInt8] {
        let name = resource.metadata.name
        if let cached = entries.withLock({ $0[name] }), cached.resource == resource { return cached.bytes }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let bytes = Array((try? encoder.encode(resource)) ?? Data("{}".utf8))
        entries.withLock { entries in
            if entries.count >= entriesMax { entries.removeAll() }
            entries[name] = Entry(resource: resource, bytes: bytes)
        }
        return bytes
    }

    /// A JSON array of the products, in order.
    func json(_ resources: [ProductResource]) -> [UInt8] {
        var output: [UInt8] = [UInt8(ascii: "[")]
        for (index, resource) in resources.enumerated() {
            if index > 0 { output.append(UInt8(ascii: ",")) }
            output.append(contentsOf: json(resource))
        }
        output.append(UInt8(ascii: "]"))
        return output
    }
}
