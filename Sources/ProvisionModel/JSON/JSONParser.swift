#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An error in a JSON text, with the byte position where it was found.
public struct JSONParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var byteOffset: Int

    public var description: String { "\(message) at byte \(byteOffset)" }
}

/// A strict JSON parser over UTF-8 bytes (RFC 8259). Written for the hot path: it reads
/// the bytes once, without Foundation, and decodes strings only when they hold escapes.
public struct JSONParser: ~Copyable {
    private let bytes: UnsafeBufferPointer<UInt8>
    private var position: Int = 0
    /// Deeply nested input is an attack, not an event; cap the recursion.
    private static let depthMax = 128

    private init(bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
    }

    public static func parse(_ bytes: UnsafeBufferPointer<UInt8>) throws(JSONParseError) -> JSONValue {
        var parser = JSONParser(bytes: bytes)
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        if parser.position != bytes.count {
            throw parser.error("unexpected data after the JSON value")
        }
        return value
    }

    public static func parse(_ bytes: [UInt8]) throws(JSONParseError) -> JSONValue {
        let result: Result<JSONValue, JSONParseError> = bytes.withUnsafeBufferPointer { buffer in
            do throws(JSONParseError) { return .success(try parse(buffer)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    public static func parse(_ text: String) throws(JSONParseError) -> JSONValue {
        try parse(Array(text.utf8))
    }

    /// Reads only the named top-level fields of a JSON object into `values` (indexed like
    /// `names`; slots of names the object lacks are left as they were) and skips every other
    /// value without decoding it, though the whole text is checked to be a JSON object. This
    /// is the pipeline's hot path: an event has many fields and a product reads a few.
    public static func scanObject(_ bytes: UnsafeBufferPointer<UInt8>, names: JSONFieldNames,
                                  into values: inout [JSONValue?]) throws(JSONParseError)
    {
        let result: Result<Void, JSONParseError> = names.bytes.withUnsafeBufferPointer { nameBytes in
            names.ranges.withUnsafeBufferPointer { nameRanges in
                do throws(JSONParseError) {
                    try scanObject(bytes, nameBytes: nameBytes, nameRanges: nameRanges, into: &values)
                    return .success(())
                } catch {
                    return .failure(error)
                }
            }
        }
        try result.get()
    }

    private static func scanObject(_ bytes: UnsafeBufferPointer<UInt8>, nameBytes: UnsafeBufferPointer<UInt8>,
                                   nameRanges: UnsafeBufferPointer<Range<Int>>,
                                   into values: inout [JSONValue?]) throws(JSONParseError)
    {
        var parser = JSONParser(bytes: bytes)
        parser.skipWhitespace()
        guard parser.position < bytes.count, bytes[parser.position] == UInt8(ascii: "{") else {
            throw parser.error("expected a JSON object")
        }
        parser.position += 1
        parser.skipWhitespace()
        if parser.position < bytes.count, bytes[parser.position] == UInt8(ascii: "}") {
            parser.position += 1
        } else {
            while true {
                parser.skipWhitespace()
                guard parser.position < bytes.count, bytes[parser.position] == UInt8(ascii: "\"") else {
                    throw parser.error("expected a string key")
                }
                let slot = try parser.matchKey(nameBytes: nameBytes, nameRanges: nameRanges)
                parser.skipWhitespace()
                guard parser.position < bytes.count, bytes[parser.position] == UInt8(ascii: ":") else {
                    throw parser.error("expected ':'")
                }
                parser.position += 1
                parser.skipWhitespace()
                if let slot {
                    values[slot] = try parser.parseValue(depth: 1)
                } else {
                    try parser.skipValue(depth: 1)
                }
                parser.skipWhitespace()
                guard parser.position < bytes.count else { throw parser.error("unexpected end of input") }
                if bytes[parser.position] == UInt8(ascii: ",") {
                    parser.position += 1
                } else if bytes[parser.position] == UInt8(ascii: "}") {
                    parser.position += 1
                    break
                } else {
                    throw parser.error("expected ',' or '}'")
                }
            }
        }
        parser.skipWhitespace()
        if parser.position != bytes.count { throw parser.error("unexpected data after the JSON value") }
    }

    /// Reads a key and returns the index of the name it equals, comparing bytes, not Strings.
    private mutating func matchKey(nameBytes: UnsafeBufferPointer<UInt8>,
                                   nameRanges: UnsafeBufferPointer<Range<Int>>) throws(JSONParseError) -> Int?
    {
        let start = position + 1
        var end = start
        while end < bytes.count, bytes[end] != UInt8(ascii: "\""), bytes[end] != UInt8(ascii: "\\") { end += 1 }
        if end < bytes.count, bytes[end] == UInt8(ascii: "\\") {
            // An escaped key: decode it the slow way.
            let key = Array(try parseString().utf8)
            return nameRanges.firstIndex { !$0.isEmpty && Array(nameBytes[$0]) == key }
        }
        guard end < bytes.count else { throw error("unterminated string") }
        position = end + 1
        let length = end - start
        for index in 0..<nameRanges.count {
            let range = nameRanges[index]
            if range.count == length, length > 0, memcmp(nameBytes.baseAddress! + range.lowerBound, bytes.baseAddress! + start, length) == 0 {
                return index
            }
        }
        return nil
    }

    /// Skips a value, checking its structure but not decoding it.
    private mutating func skipValue(depth: Int) throws(JSONParseError) {
        guard position < bytes.count else { throw error("unexpected end of input") }
        switch bytes[position] {
        case UInt8(ascii: "\""):
            position += 1
            let base = bytes.baseAddress!
            while position < bytes.count {
                // memchr is vectorised: find the next quote, then count the backslashes before
                // it to tell an escaped quote from the closing one.
                guard let found = memchr(base + position, Int32(UInt8(ascii: "\"")), bytes.count - position) else { break }
                let quote = UnsafePointer(found.assumingMemoryBound(to: UInt8.self)) - base
                var backslashes = 0
                while quote - backslashes - 1 >= position, base[quote - backslashes - 1] == UInt8(ascii: "\\") { backslashes += 1 }
                position = quote + 1
                if backslashes % 2 == 0 { return }
            }
            throw error("unterminated string")
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            if depth > Self.depthMax { throw error("nesting deeper than \(Self.depthMax)") }
            // Nested values are rare in events; parsing them validates them fully.
            _ = try parseValue(depth: depth)
        case UInt8(ascii: "t"): try expectLiteral("true")
        case UInt8(ascii: "f"): try expectLiteral("false")
        case UInt8(ascii: "n"): try expectLiteral("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            try skipNumber()
        default:
            throw error("unexpected character '\(Character(Unicode.Scalar(bytes[position])))'")
        }
    }

    private func error(_ message: String) -> JSONParseError {
        JSONParseError(message: message, byteOffset: position)
    }

    private mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x0A, 0x0D, 0x09: position += 1
            default: return
            }
        }
    }

    private mutating func parseValue(depth: Int) throws(JSONParseError) -> JSONValue {
        guard position < bytes.count else { throw error("unexpected end of input") }
        switch bytes[position] {
        case UInt8(ascii: "{"): return try parseObject(depth: depth + 1)
        case UInt8(ascii: "["): return try parseArray(depth: depth + 1)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw error("unexpected character '\(Character(Unicode.Scalar(bytes[position])))'")
        }
    }

    private mutating func expectLiteral(_ literal: StaticString) throws(JSONParseError) {
        let count = literal.utf8CodeUnitCount
        guard position + count <= bytes.count else { throw error("unexpected end of input") }
        let start = literal.utf8Start
        for index in 0..<count where bytes[position + index] != start[index] {
            throw error("invalid literal")
        }
        position += count
    }

    private mutating func parseObject(depth: Int) throws(JSONParseError) -> JSONValue {
        if depth > Self.depthMax { throw error("nesting deeper than \(Self.depthMax)") }
        position += 1
        var fields: [(key: String, value: JSONValue)] = []
        skipWhitespace()
        if position < bytes.count, bytes[position] == UInt8(ascii: "}") {
            position += 1
            return .object(JSONObject(fields))
        }
        while true {
            skipWhitespace()
            guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else {
                throw error("expected a string key")
            }
            let key = try parseString()
            skipWhitespace()
            guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else { throw error("expected ':'") }
            position += 1
            skipWhitespace()
            let value = try parseValue(depth: depth)
            fields.append((key, value))
            skipWhitespace()
            guard position < bytes.count else { throw error("unexpected end of input") }
            if bytes[position] == UInt8(ascii: ",") {
                position += 1
            } else if bytes[position] == UInt8(ascii: "}") {
                position += 1
                return .object(JSONObject(fields))
            } else {
                throw error("expected ',' or '}'")
            }
        }
    }

    private mutating func parseArray(depth: Int) throws(JSONParseError) -> JSONValue {
        if depth > Self.depthMax { throw error("nesting deeper than \(Self.depthMax)") }
        position += 1
        var elements: [JSONValue] = []
        skipWhitespace()
        if position < bytes.count, bytes[position] == UInt8(ascii: "]") {
            position += 1
            return .array(elements)
        }
        while true {
            skipWhitespace()
            elements.append(try parseValue(depth: depth))
            skipWhitespace()
            guard position < bytes.count else { throw error("unexpected end of input") }
            if bytes[position] == UInt8(ascii: ",") {
                position += 1
            } else if bytes[position] == UInt8(ascii: "]") {
                position += 1
                return .array(elements)
            } else {
                throw error("expected ',' or ']'")
            }
        }
    }

    private mutating func parseString() throws(JSONParseError) -> String {
        position += 1
        let start = position
        while position < bytes.count {
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
                position += 1
                return text
            }
            if byte == UInt8(ascii: "\\") { return try parseEscapedString(from: start) }
            if byte < 0x20 { throw error("control character in string") }
            position += 1
        }
        throw error("unterminated string")
    }

    private mutating func parseEscapedString(from start: Int) throws(JSONParseError) -> String {
        var scalars: [UInt8] = Array(bytes[start..<position])
        while position < bytes.count {
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                position += 1
                return String(decoding: scalars, as: UTF8.self)
            }
            if byte < 0x20 { throw error("control character in string") }
            if byte != UInt8(ascii: "\\") {
                scalars.append(byte)
                position += 1
                continue
            }
            position += 1
            guard position < bytes.count else { throw error("unterminated string") }
            let escaped = bytes[position]
            position += 1
            switch escaped {
            case UInt8(ascii: "\""): scalars.append(0x22)
            case UInt8(ascii: "\\"): scalars.append(0x5C)
            case UInt8(ascii: "/"): scalars.append(0x2F)
            case UInt8(ascii: "b"): scalars.append(0x08)
            case UInt8(ascii: "f"): scalars.append(0x0C)
            case UInt8(ascii: "n"): scalars.append(0x0A)
            case UInt8(ascii: "r"): scalars.append(0x0D)
            case UInt8(ascii: "t"): scalars.append(0x09)
            case UInt8(ascii: "u"):
                var code = try parseHex4()
                if (0xD800...0xDBFF).contains(code) {
                    guard position + 1 < bytes.count, bytes[position] == UInt8(ascii: "\\"),
                        bytes[position + 1] == UInt8(ascii: "u")
                    else { throw error("unpaired surrogate") }
                    position += 2
                    let low = try parseHex4()
                    guard (0xDC00...0xDFFF).contains(low) else { throw error("unpaired surrogate") }
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(code) {
                    throw error("unpaired surrogate")
                }
                guard let scalar = Unicode.Scalar(code) else { throw error("invalid unicode escape") }
                scalars.append(contentsOf: Array(String(Character(scalar)).utf8))
            default:
                throw error("invalid escape")
            }
        }
        throw error("unterminated string")
    }

    private mutating func parseHex4() throws(JSONParseError) -> UInt32 {
        guard position + 4 <= bytes.count else { throw error("invalid unicode escape") }
        var code: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[position]
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
            default: throw error("invalid unicode escape")
            }
            code = code << 4 | digit
            position += 1
        }
        return code
    }

    /// Checks a number's syntax and moves past it; returns how many digits it has and
    /// whether it has a fraction or an exponent.
    @inline(__always)
    private mutating func scanNumber() throws(JSONParseError) -> (digits: Int, fractionDigits: Int, exponent: Bool) {
        if bytes[position] == UInt8(ascii: "-") { position += 1 }
        guard position < bytes.count, isDigit(bytes[position]) else { throw error("invalid number") }
        if bytes[position] == UInt8(ascii: "0"), position + 1 < bytes.count, isDigit(bytes[position + 1]) {
            throw error("leading zero in number")
        }
        var digits = 0
        while position < bytes.count, isDigit(bytes[position]) {
            digits += 1
            position += 1
        }
        var fractionDigits = 0
        if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
            position += 1
            guard position < bytes.count, isDigit(bytes[position]) else { throw error("invalid number") }
            while position < bytes.count, isDigit(bytes[position]) {
                fractionDigits += 1
                position += 1
            }
        }
        var exponent = false
        if position < bytes.count, bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E") {
            exponent = true
            position += 1
            if position < bytes.count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") {
                position += 1
            }
            guard position < bytes.count, isDigit(bytes[position]) else { throw error("invalid number") }
            while position < bytes.count, isDigit(bytes[position]) { position += 1 }
        }
        return (digits + fractionDigits, fractionDigits, exponent)
    }

    /// A skipped number is checked, never converted.
    private mutating func skipNumber() throws(JSONParseError) {
        _ = try scanNumber()
    }

    private mutating func parseNumber() throws(JSONParseError) -> JSONValue {
        let start = position
        let (digits, fractionDigits, exponent) = try scanNumber()
        // The common case, up to 19 digits and no exponent: one pass over the digits into
        // 64 bits gives an integer or an exact decimal.
        if digits <= 19 && !exponent {
            var index = start
            let negative = bytes[index] == UInt8(ascii: "-")
            if negative { index += 1 }
            var significand: UInt64 = 0
            while index < position {
                let digit = bytes[index] &- UInt8(ascii: "0")
                if digit < 10 { significand = significand &* 10 &+ UInt64(digit) }
                index += 1
            }
            if fractionDigits == 0 {
                if negative, significand <= UInt64(Int64.max) + 1 { return .integer(Int64(truncatingIfNeeded: 0 &- significand)) }
                if !negative, significand <= UInt64(Int64.max) { return .integer(Int64(significand)) }
            }
            let signed = negative ? -Int128(significand) : Int128(significand)
            if let decimal = DecimalNumber(significand: signed, scale: fractionDigits) { return .decimal(decimal) }
        }
        // Every number of up to 38 digits is kept exactly; only larger ones become doubles.
        if let decimal = DecimalNumber.parse(bytes, from: start, to: position) { return .decimal(decimal) }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
        guard let number = Double(text) else { throw error("invalid number") }
        return .number(number)
    }

    @inline(__always)
    private func isDigit(_ byte: UInt8) -> Bool {
        byte &- UInt8(ascii: "0") < 10
    }
}

/// Field names laid out in one buffer, for `JSONParser.scanObject` to compare keys against
/// without touching an array per name.
public struct JSONFieldNames: Sendable, Equatable {
    let bytes: [UInt8]
    let ranges: [Range<Int>]

    /// - Parameter matching: which names to look for; the others keep their index but never
    ///   match, so one slot layout serves several scans.
    public init(_ names: [String], matching: (Int) -> Bool = { _ in true }) {
        var bytes: [UInt8] = []
        var ranges: [Range<Int>] = []
        for (index, name) in names.enumerated() {
            let start = bytes.count
            if matching(index) { bytes.append(contentsOf: name.utf8) }
            ranges.append(start..<bytes.count)
        }
        self.bytes = bytes
        self.ranges = ranges
        matchesNothing = ranges.allSatisfy(\.isEmpty)
    }

    public var count: Int { ranges.count }

    /// True when no name is looked for.
    public let matchesNothing: Bool
}
