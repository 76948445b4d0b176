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

        public init(name: String, type: ValueType) {
            self.name = name
            self.type = type
        }
    }

    public init(fields: [Field] = []) {
        self.fields = fields
    }

    public func field(named name: String) -> Field? {
        fields.first { $0.name == name }
    }

    public var fieldNames: [String] { fields.map(\.name) }
}

extension Schema: Codable {
    // A schema encodes as an ordered list so that a round trip through JSON keeps the order.
    private struct EncodedField: Codable {
        var name: String
        var type: String
        var fields: Schema?
    }

    public init(from decoder: Decoder) throws {
        let encoded = try [EncodedField](from: decoder)
        fields = try encoded.map { field in
            if field.type == "object" {
                return Field(name: field.name, type: .object(field.fields ?? Schema()))
            }
            guard let type = ValueType.named(field.type) ?? (field.type == "duration" ? .duration : nil) else {
                throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "unknown type \(field.type)"))
            }
            return Field(name: field.name, type: type)
        }
    }

    public func encode(to encoder: Encoder) throws {
        try fields.map { field -> EncodedField in
            if case .object(let nested) = field.type {
                return EncodedField(name: field.name, type: "object", fields: nested)
            }
            return EncodedField(name: field.name, type: field.type.name, fields: nil)
        }.encode(to: encoder)
    }
}
