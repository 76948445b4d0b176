/// A value while an expression is evaluated.
public enum Value: Sendable, Equatable {
    case null
    case boolean(Bool)
    case integer(Int64)
    case decimal(DecimalNumber)
    case string(String)
    case timestamp(TimestampMilliseconds)
    case duration(Int64)
    case json(JSONValue)

    public var isNull: Bool {
        if case .null = self { return true }
        if case .json(.null) = self { return true }
        return false
    }

    /// The JSON form of the value, as written to sinks.
    public var json: JSONValue {
        switch self {
        case .null: return .null
        case .boolean(let flag): return .bool(flag)
        case .integer(let integer): return .integer(integer)
        case .decimal(let number): return .decimal(number)
        case .string(let text): return .string(text)
        case .timestamp(let milliseconds): return .string(Timestamp.format(milliseconds))
        case .duration(let milliseconds): return .string(DurationText.format(milliseconds: milliseconds))
        case .json(let json): return json
        }
    }

    /// Plain text, for CSV cells and string concatenation.
    public var text: String {
        switch self {
        case .null: return ""
        case .boolean(let flag): return flag ? "true" : "false"
        case .integer(let integer): return String(integer)
        case .decimal(let number): return number.text
        case .string(let text): return text
        case .timestamp(let milliseconds): return Timestamp.format(milliseconds)
        case .duration(let milliseconds): return DurationText.format(milliseconds: milliseconds)
        case .json(let json):
            if case .string(let text) = json { return text }
            return JSONWriter.string(json)
        }
    }

    /// Writes the value as JSON without building a `JSONValue` first.
    public func writeJSON(into output: inout [UInt8]) {
        switch self {
        case .null: output.append(contentsOf: "null".utf8)
        case .boolean(let flag): output.append(contentsOf: (flag ? "true" : "false").utf8)
        case .integer(let integer): JSONWriter.writeInteger(integer, into: &output)
        case .decimal(let number): number.write(into: &output)
        case .string(let text): JSONWriter.writeString(text, into: &output)
        case .timestamp(let milliseconds):
            output.append(UInt8(ascii: "\""))
            Timestamp.write(milliseconds, into: &output)
            output.append(UInt8(ascii: "\""))
        case .duration, .json: JSONWriter.write(json, into: &output)
        }
    }
}
