import NIOCore
import ProvisionModel

/// How a product's values become PostgreSQL text: the input syntax of each column type,
/// and the escaping of `COPY … FROM STDIN (FORMAT text)`.
enum PostgresText {
    /// The column type for an output field's type.
    static func columnType(_ type: ValueType) -> String {
        switch type {
        case .string, .duration: return "text"
        case .integer: return "bigint"
        case .decimal: return "numeric"
        case .boolean: return "boolean"
        case .timestamp: return "timestamptz"
        case .json, .null, .object: return "jsonb"
        }
    }

    /// How information_schema names a column type.
    static func catalogTypeName(_ columnType: String) -> String {
        columnType == "timestamptz" ? "timestamp with time zone" : columnType
    }

    /// The input text of a value for a column of `columnType`, or nil for SQL NULL.
    static func text(_ value: Value?, columnType: String) -> String? {
        guard let value, !value.isNull else { return nil }
        if case .json(let json) = value {
            // A jsonb column takes JSON text, so a JSON string keeps its quotes there; every
            // other column takes the string itself.
            if columnType != "jsonb", case .string(let text) = json { return text }
            return JSONWriter.string(json)
        }
        if columnType == "jsonb" {
            var bytes: [UInt8] = []
            value.writeJSON(into: &bytes)
            return String(decoding: bytes, as: UTF8.self)
        }
        return value.text
    }

    /// Appends one column of a COPY text row: `\N` for NULL, the text escaped otherwise.
    /// The common types are written without a `String` in between; `scratch` is reused.
    static func appendCopyField(_ value: Value?, columnType: String, to buffer: inout ByteBuffer, scratch: inout [UInt8]) {
        guard let value, !value.isNull else {
            buffer.writeStaticString("\\N")
            return
        }
        switch value {
        case .integer(let integer) where columnType != "jsonb":
            appendInteger(integer, to: &buffer)
        case .decimal(let number) where columnType != "jsonb":
            scratch.removeAll(keepingCapacity: true)
            number.write(into: &scratch)
            buffer.writeBytes(scratch)
        case .timestamp(let milliseconds) where columnType != "jsonb":
            scratch.removeAll(keepingCapacity: true)
            Timestamp.write(milliseconds, into: &scratch)
            buffer.writeBytes(scratch)
        case .boolean(let flag) where columnType != "jsonb":
            buffer.writeInteger(flag ? UInt8(ascii: "t") : UInt8(ascii: "f"))
        case .string(var text) where columnType != "jsonb":
            text.withUTF8 { appendEscaped($0, to: &buffer) }
        default:
            guard var text = text(value, columnType: columnType) else {
                buffer.writeStaticString("\\N")
                return
            }
            text.withUTF8 { appendEscaped($0, to: &buffer) }
        }
    }

    static func appendInteger(_ integer: Int64, to buffer: inout ByteBuffer) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
        let magnitude = integer.magnitude
        withUnsafeMutableBytes(of: &digits) { scratch in
            var position = scratch.count
            var rest = magnitude
            repeat {
                position -= 1
                scratch[position] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
            } while rest > 0
            if integer < 0 {
                position -= 1
                scratch[position] = UInt8(ascii: "-")
            }
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: scratch[position...]))
        }
    }

    /// Backslash, newline, carriage return and tab are the bytes COPY's text format gives a
    /// meaning; they are escaped, everything else passes as it is.
    static func appendEscaped(_ bytes: UnsafeBufferPointer<UInt8>, to buffer: inout ByteBuffer) {
        var start = 0
        for index in 0..<bytes.count {
            let byte = bytes[index]
            guard byte == UInt8(ascii: "\\") || byte == 0x0A || byte == 0x0D || byte == 0x09 else { continue }
            if index > start { buffer.writeBytes(UnsafeBufferPointer(rebasing: bytes[start..<index])) }
            switch byte {
            case 0x0A: buffer.writeStaticString("\\n")
            case 0x0D: buffer.writeStaticString("\\r")
            case 0x09: buffer.writeStaticString("\\t")
            default: buffer.writeStaticString("\\\\")
            }
            start = index + 1
        }
        if start < bytes.count { buffer.writeBytes(UnsafeBufferPointer(rebasing: bytes[start...])) }
    }

    /// `"name"`, with quotes inside doubled.
    static func quoted(_ identifier: String) -> String {
        "\"" + identifier.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// PostgreSQL cuts identifiers at 63 bytes; a longer name is shortened on a character
    /// boundary and keeps its suffix, so two derived names never collide after the cut.
    static func identifier(_ base: String, suffix: String) -> String {
        let limit = 63 - suffix.utf8.count
        var kept = ""
        for character in base {
            if kept.utf8.count + String(character).utf8.count > limit { break }
            kept.append(character)
        }
        return kept + suffix
    }
}
