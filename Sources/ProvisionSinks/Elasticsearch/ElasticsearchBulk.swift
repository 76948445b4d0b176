import ProvisionModel
import ProvisionPipeline

/// One write to an index: a document to index, or a delete.
struct BulkOperation: Sendable {
    enum Action: Sendable { case index, delete }
    var action: Action
    var id: String
    var partition: Int
    var offset: Int64
    /// The document's JSON on one line (empty for a delete).
    var source: [UInt8]
}

/// What the bulk API said about one item, as its documentation defines it: a `status` per
/// item, and an `error` object when it failed.
enum BulkItemOutcome: Equatable, Sendable {
    /// Written, or a delete of a document that is not there (404).
    case done
    /// The cluster is overloaded or an internal error happened: send it again.
    case retry(String)
    /// The document itself is refused (a mapping conflict, a bad value, an id too long).
    case rejected(String)

    static func classify(action: String, status: Int, errorType: String?, errorReason: String?) -> BulkItemOutcome {
        let detail = [errorType, errorReason].compactMap { $0 }.joined(separator: ": ")
        switch status {
        case 200..<300: return .done
        case 404 where action == "delete": return .done
        case 429, 500..<600: return .retry("status \(status)\(detail.isEmpty ? "" : " (\(detail))")")
        default: return .rejected("Elasticsearch refused the document: status \(status)\(detail.isEmpty ? "" : ", \(detail)")")
        }
    }
}

/// Bulk requests as newline-delimited JSON, split by size and count.
enum BulkBody {
    /// The action and source lines of `operations`.
    static func encode(_ operations: ArraySlice<BulkOperation>, index: String) -> [UInt8] {
        var body: [UInt8] = []
        body.reserveCapacity(operations.reduce(0) { $0 + $1.source.count + 96 + $1.id.utf8.count })
        for operation in operations {
            body.append(contentsOf: operation.action == .index ? #"{"index":{"_index":"#.utf8 : #"{"delete":{"_index":"#.utf8)
            JSONWriter.writeString(index, into: &body)
            body.append(contentsOf: #","_id":"#.utf8)
            JSONWriter.writeString(operation.id, into: &body)
            body.append(contentsOf: "}}".utf8)
            body.append(0x0A)
            if operation.action == .index {
                body.append(contentsOf: operation.source)
                body.append(0x0A)
            }
        }
        return body
    }

    /// Consecutive ranges of operations, each at most `maxOperations` long and (unless one
    /// document alone is larger) at most `maxBytes` of body. With `parallel` requests in
    /// flight, the count limit is lowered so the requests come in full waves of even size:
    /// 13 requests of 5,000 and one of 536 would leave three connections idle at the end.
    static func split(_ operations: [BulkOperation], maxOperations: Int, maxBytes: Int, parallel: Int = 1) -> [Range<Int>] {
        let waves = (operations.count + maxOperations * parallel - 1) / max(1, maxOperations * parallel)
        let maxOperations = max(1, (operations.count + waves * parallel - 1) / max(1, waves * parallel))
        var ranges: [Range<Int>] = []
        var start = 0, bytes = 0
        for (index, operation) in operations.enumerated() {
            let size = operation.source.count + 96 + operation.id.utf8.count
            if index > start, index - start >= maxOperations || bytes + size > maxBytes {
                ranges.append(start..<index)
                start = index
                bytes = 0
            }
            bytes += size
        }
        if start < operations.count { ranges.append(start..<operations.count) }
        return ranges
    }

    /// The outcome of each item of a bulk response, in order; nil if it is not one.
    static func outcomes(_ response: JSONValue, count: Int) -> [BulkItemOutcome]? {
        if case .bool(false)? = response["errors"], response["items"] == nil { return Array(repeating: .done, count: count) }
        guard case .array(let items)? = response["items"], items.count == count else { return nil }
        return items.map { item in
            guard case .object(let wrapper) = item, let (action, body) = wrapper.fields.first else {
                return .retry("an item of the response has no action")
            }
            var status = 0
            switch body["status"] {
            case .integer(let value)?: status = Int(value)
            case .number(let value)?: status = Int(value)
            default: break
            }
            var errorType: String?, errorReason: String?
            if case .string(let type)? = body["error"]?["type"] { errorType = type }
            if case .string(let reason)? = body["error"]?["reason"] { errorReason = reason }
            return BulkItemOutcome.classify(action: action, status: status, errorType: errorType, errorReason: errorReason)
        }
    }
}

/// An index's mappings from a product's output schema.
enum ElasticsearchMapping {
    static func fieldMapping(_ type: ValueType, fullText: Bool) -> JSONValue {
        switch type {
        case .string: return fullText ? ["type": "text"] : ["type": "keyword"]
        case .duration: return ["type": "keyword"]
        case .integer: return ["type": "long"]
        case .decimal: return ["type": "double"]
        case .boolean: return ["type": "boolean"]
        case .timestamp: return ["type": "date", "format": "strict_date_optional_time||epoch_millis"]
        // Any JSON is kept in the source but not indexed: its shape is not known.
        case .json, .null, .object: return ["type": "object", "enabled": false]
        }
    }

    /// The body of the `PUT <index>` that creates a build's index. `_meta` marks it as
    /// Provision's, for which product and build, so nothing else is ever taken for it.
    static func createIndexBody(schema: Schema, fullText: Set<String>, strict: Bool, product: String, build: Int) -> JSONValue {
        let properties = JSONObject(schema.fields.map { (key: $0.name, value: fieldMapping($0.type, fullText: fullText.contains($0.name))) })
        return [
            "settings": ["index": ["number_of_shards": 1, "refresh_interval": "1s"]],
            "mappings": [
                // With a `select`, every field is known and anything else is a bug; a whole
                // event may carry fields beyond the dataset's schema, kept but not indexed.
                "dynamic": .string(strict ? "strict" : "false"),
                "_meta": ["managed_by": "provision", "product": .string(product), "build": .integer(Int64(build))],
                "properties": .object(properties),
            ],
        ]
    }
}
