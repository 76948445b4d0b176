/// The type of a dataset field, an expression or an output column.
public indirect enum ValueType: Sendable, Hashable {
    case string
    case integer
    case decimal
    case boolean
    case timestamp
    case duration
    /// Any JSON: passes through `select` untouched; only `is null` applies to it.
    case json
    /// The type of the `null` literal, which fits wherever a value may be absent.
    case null
    case object(Schema)

    public var name: String {
        switch self {
        case .string: return "string"
        case .integer: return "integer"
        case .decimal: return "decimal"
        case .boolean: return "boolean"
        case .timestamp: return "timestamp"
        case .duration: return "duration"
        case .json: return "json"
        case .null: return "null"
        case .object: return "object"
        }
    }

    public var isNumeric: Bool { self == .integer || self == .decimal }

    /// Type names a schema may use, with their common synonyms.
    public static func named(_ name: String) -> ValueType? {
        switch name {
        case "string", "text": return .string
        case "integer", "int", "long": return .integer
        case "decimal", "double", "number", "float": return .decimal
        case "boolean", "bool": return .boolean
        case "timestamp": return .timestamp
        case "json": return .json
        default: return nil
        }
    }

    public static let schemaTypeNames = ["string", "integer", "decimal", "boolean", "timestamp", "json"]
}

/// An ordered set of named, typed fields: the shape of a dataset's events or of a product's output.
public struct Schema: Sendable, Hashable {
    public var fields: [Field]

    public struct Field: Sendable, Hashable {
        public var name: String
        public var type: ValueType
        /// Personal data (`{type: string, pii: true}`): samples and previews show it masked to
        /// any team but the dataset's own.
        public var pii: Bool

        public init(name: String, type: ValueType, pii: Bool = false) {
            self.name = name
            self.type = type
            self.pii = pii
        }
    }

    public init(fields: [Field] = []) {
        self.fields = fields
    }

    public func field(named name: String) -> Field? {
        fields.first { $0.name == name }
    }

    public var fieldNames: [String] { fields.map(\.name) }

    /// Whether a field, or a field of a nested object, is marked `pii`.
    public var containsPII: Bool {
        fields.contains { field in
            if field.pii { return true }
            if case .object(let nested) = field.type { return nested.containsPII }
            return false
        }
    }

    /// `row` with the value of every `pii` field (nested ones too) replaced by `"***"`; a
    /// null stays null, so that a masked sample still shows which values are missing.
    public func masking(_ row: JSONValue) -> JSONValue {
        guard containsPII, case .object(var object) = row else { return row }
        for field in fields {
            guard let value = object[field.name] else { continue }
            if field.pii {
                if value != .null { object[field.name] = .string(Self.mask) }
            } else if case .object(let nested) = field.type, nested.containsPII {
                object[field.name] = nested.masking(value)
            }
        }
        return .object(object)
    }

    public static let mask = "***"

    public var withoutPII: Schema {
        Schema(fields: fields.map { field in
            var plain = field
            plain.pii = false
            if case .object(let nested) = field.type { plain.type = .object(nested.withoutPII) }
            return plain
        })
    }
}

extension Schema: Codable {
    // A schema encodes as an ordered list so that a round trip through JSON keeps the order.
    private struct EncodedField: Codable {
        var name: String
        var type: String
        var fields: Schema?
        var pii: Bool?
    }

    public init(from decoder: Decoder) throws {
        let encoded = try [EncodedField](from: decoder)
        fields = try encoded.map { field in
            if field.type == "object" {
                return Field(name: field.name, type: .object(field.fields ?? Schema()), pii: field.pii ?? false)
            }
            guard let type = ValueType.named(field.type) ?? (field.type == "duration" ? .duration : nil) else {
                throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "unknown type \(field.type)"))
            }
            return Field(name: field.name, type: type, pii: field.pii ?? false)
        }
    }

    public func encode(to encoder: Encoder) throws {
        try fields.map { field -> EncodedField in
            if case .object(let nested) = field.type {
                return EncodedField(name: field.name, type: "object", fields: nested, pii: field.pii ? true : nil)
            }
            return EncodedField(name: field.name, type: field.type.name, fields: nil, pii: field.pii ? true : nil)
        }.encode(to: encoder)
    }
}
