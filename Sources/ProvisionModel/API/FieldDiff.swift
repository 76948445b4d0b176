import Foundation

/// One field that an apply changes, as `diff` and `apply --dry-run` print it.
public struct FieldChange: Sendable, Equatable, Codable {
    /// Where in the document: `spec.where`, `spec.sink.postgres.table`, `metadata.labels.tier`.
    public var path: String
    /// The value before and after, as JSON; nil where the field is absent.
    public var from: String?
    public var to: String?

    public init(path: String, from: String?, to: String?) {
        self.path = path
        self.from = from
        self.to = to
    }
}

/// The fields that differ between two versions of a document (its metadata and spec),
/// compared as JSON: objects field by field, lists element by element when their length
/// is the same and as a whole when it is not.
public enum FieldDiff {
    public static func changes<Document: Encodable>(from old: Document, to new: Document) -> [FieldChange] {
        var changes: [FieldChange] = []
        compare(json(old), json(new), path: "", into: &changes)
        return changes
    }

    private static func json<Document: Encodable>(_ document: Document) -> JSONValue {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(document), let value = try? JSONParser.parse(Array(data)) else { return .null }
        return value
    }

    private static func text(_ value: JSONValue?) -> String? {
        guard let value else { return nil }
        var bytes: [UInt8] = []
        JSONWriter.write(value, into: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func compare(_ old: JSONValue?, _ new: JSONValue?, path: String, into changes: inout [FieldChange]) {
        guard old != new else { return }
        switch (old, new) {
        case (.object(let before), .object(let after)):
            for name in Set(before.keys + after.keys).sorted() {
                compare(before[name], after[name], path: path.isEmpty ? name : "\(path).\(name)", into: &changes)
            }
        case (.array(let before), .array(let after)) where before.count == after.count:
            for index in before.indices {
                compare(before[index], after[index], path: "\(path)[\(index)]", into: &changes)
            }
        default:
            changes.append(FieldChange(path: path, from: text(old), to: text(new)))
        }
    }
}

/// The references (`${secret:NAME}`, `${env:NAME}`) a spec makes — URLs, credentials, headers,
/// secrets — each with the path of the field that holds it.
public enum SecretReferences {
    public static func find<Document: Encodable>(in document: Document) -> [(path: String, reference: ValueReference)] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(document), let value = try? JSONParser.parse(Array(data)) else { return [] }
        var found: [(String, ValueReference)] = []
        walk(value, path: "", into: &found)
        return found
    }

    /// The environment variables a team's specs may read: `PROVISION_TEAM_<TEAM>_…`, the team
    /// upper-cased with `-` as `_`. An admin puts a team's secrets there.
    public static func teamPrefix(_ team: String) -> String {
        "PROVISION_TEAM_" + team.uppercased().replacingOccurrences(of: "-", with: "_") + "_"
    }

    private static func walk(_ value: JSONValue, path: String, into found: inout [(String, ValueReference)]) {
        switch value {
        case .string(let text):
            // A reference is a whole value; validation refuses one inside other text.
            if let reference = ValueReference.parse(text) { found.append((path, reference)) }
        case .object(let object):
            for (key, field) in object.fields { walk(field, path: path.isEmpty ? key : "\(path).\(key)", into: &found) }
        case .array(let items):
            for (index, item) in items.enumerated() { walk(item, path: "\(path)[\(index)]", into: &found) }
        default:
            break
        }
    }
}
