#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Turns JSON Lines into log records, all or nothing: the first bad line fails the whole
/// input with its line number.
public enum RecordLines {
    public struct LineError: Error, Sendable, CustomStringConvertible {
        public var line: Int
        public var message: String

        public var description: String { "line \(line): \(message)" }
    }

    /// - Parameters:
    ///   - keyField: the field whose value becomes the record key.
    ///   - timeField: the field whose value (RFC 3339 or epoch milliseconds) becomes the record
    ///     timestamp; records without it get `now`.
    ///   - envelope: each line is `{"key", "value", "time", "headers"}`; a null value is a tombstone.
    public static func parse(_ bytes: [UInt8], keyField: String?, timeField: String?, envelope: Bool,
                             now: TimestampMilliseconds) throws(LineError) -> [LogRecord]
    {
        var records: [LogRecord] = []
        try scan(bytes, keyField: keyField, timeField: timeField, envelope: envelope, now: now, keepingValues: true) { records.append($0) }
        return records
    }

    /// Checks every line as `parse` would, keeping nothing; returns the number of records.
    public static func validate(_ bytes: [UInt8], keyField: String?, timeField: String?, envelope: Bool) throws(LineError) -> Int {
        var count = 0
        try scan(bytes, keyField: keyField, timeField: timeField, envelope: envelope, now: 0, keepingValues: false) { _ in count += 1 }
        return count
    }

    /// `parse` on several cores: the input is cut at line ends into up to `parts` pieces
    /// parsed side by side. The same records in the same order, or the same first bad line.
    public static func parse(_ bytes: [UInt8], keyField: String?, timeField: String?, envelope: Bool, now: TimestampMilliseconds,
                             parts: Int) async throws(LineError) -> [LogRecord]
    {
        let pieces = await inParts(bytes, parts: parts) { part throws(LineError) in
            var records: [LogRecord] = []
            try scan(bytes, part: part, keyField: keyField, timeField: timeField, envelope: envelope, now: now, keepingValues: true) {
                records.append($0)
            }
            return records
        }
        var parsed: [[LogRecord]] = []
        for piece in pieces { parsed.append(try piece.get()) }
        guard parsed.count > 1 else { return parsed[0] }
        var records: [LogRecord] = []
        records.reserveCapacity(parsed.reduce(0) { $0 + $1.count })
        for part in parsed { records.append(contentsOf: part) }
        return records
    }

    /// `validate` on several cores, as `parse(_:keyField:timeField:envelope:now:parts:)` parses.
    public static func validate(_ bytes: [UInt8], keyField: String?, timeField: String?, envelope: Bool,
                                parts: Int) async throws(LineError) -> Int
    {
        let pieces = await inParts(bytes, parts: parts) { part throws(LineError) in
            var count = 0
            try scan(bytes, part: part, keyField: keyField, timeField: timeField, envelope: envelope, now: 0, keepingValues: false) { _ in
                count += 1
            }
            return count
        }
        var count = 0
        for piece in pieces { count += try piece.get() }
        return count
    }

    /// Inputs smaller than this are one piece: a task per piece costs more than it saves.
    static let bytesPerPartMin = 1 << 20

    /// `body` over pieces of the input cut just after line ends, side by side; the results in
    /// input order, each failure's line numbered in the whole input. Only a failure with no
    /// failure before it is renumbered (counting the line ends before its piece): that is
    /// the one reported.
    private static func inParts<Piece: Sendable>(_ bytes: [UInt8], parts: Int,
                                                 _ body: @escaping @Sendable (Range<Int>) throws(LineError) -> Piece) async
        -> [Result<Piece, LineError>]
    {
        let ranges = pieces(of: bytes, count: min(parts, bytes.count / bytesPerPartMin))
        guard ranges.count > 1 else { return [Result { () throws(LineError) in try body(0..<bytes.count) }] }
        var results = await withTaskGroup(of: (Int, Result<Piece, LineError>).self) { group in
            for (index, range) in ranges.enumerated() {
                group.addTask { (index, Result { () throws(LineError) in try body(range) }) }
            }
            var results = [Result<Piece, LineError>?](repeating: nil, count: ranges.count)
            for await (index, result) in group { results[index] = result }
            return results.map { $0! }
        }
        if let first = results.firstIndex(where: { if case .failure = $0 { true } else { false } }), first > 0,
           case .failure(var error) = results[first]
        {
            error.line += lineEnds(in: bytes, before: ranges[first].lowerBound)
            results[first] = .failure(error)
        }
        return results
    }

    /// The input cut into up to `count` ranges of about equal size, each ending just after a
    /// line end (the last at the input's end).
    static func pieces(of bytes: [UInt8], count: Int) -> [Range<Int>] {
        guard count > 1 else { return [0..<bytes.count] }
        return bytes.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return [0..<0] }
            var ranges: [Range<Int>] = []
            var start = 0
            for index in 1..<count where start < buffer.count {
                let target = max(start, buffer.count * index / count)
                guard let lineEnd = memchr(base + target, 0x0A, buffer.count - target) else { break }
                let end = UnsafePointer(lineEnd.assumingMemoryBound(to: UInt8.self)) - base + 1
                ranges.append(start..<end)
                start = end
            }
            if start < buffer.count { ranges.append(start..<buffer.count) }
            return ranges
        }
    }

    private static func lineEnds(in bytes: [UInt8], before end: Int) -> Int {
        bytes.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return 0 }
            var count = 0, position = 0
            while position < end, let found = memchr(base + position, 0x0A, end - position) {
                count += 1
                position = UnsafePointer(found.assumingMemoryBound(to: UInt8.self)) - base + 1
            }
            return count
        }
    }

    /// Each line's record, in order; without `keepingValues` a plain line's record has no
    /// value (it was only checked). Lines are found with memchr and looked at in place: the
    /// one copy made of a line is its record's value.
    /// Lines of `part` (all of `bytes` when nil) are numbered from 1.
    private static func scan(_ bytes: [UInt8], part: Range<Int>? = nil, keyField: String?, timeField: String?, envelope: Bool,
                             now: TimestampMilliseconds, keepingValues: Bool, _ body: (LogRecord) -> Void) throws(LineError)
    {
        let names = JSONFieldNames([keyField ?? "", timeField ?? ""])
        var fields: [JSONValue?] = [nil, nil]
        let failure: LineError? = bytes.withUnsafeBufferPointer { buffer -> LineError? in
            guard let base = buffer.baseAddress else { return nil }
            let count = part?.upperBound ?? buffer.count
            var lineNumber = 0
            var lineStart = part?.lowerBound ?? 0
            while lineStart < count {
                lineNumber += 1
                let lineEnd = memchr(base + lineStart, 0x0A, count - lineStart).map { UnsafePointer($0.assumingMemoryBound(to: UInt8.self)) - base } ?? count
                var contentEnd = lineEnd
                if contentEnd > lineStart, buffer[contentEnd - 1] == 0x0D { contentEnd -= 1 }
                let line = UnsafeBufferPointer(rebasing: buffer[lineStart..<contentEnd])
                lineStart = lineEnd + 1
                if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
                do throws(LineError) {
                    if envelope {
                        body(try envelopeRecord(line, line: lineNumber, now: now))
                    } else {
                        // The value is stored as sent: check it is one JSON object and read only
                        // the key and time fields, without building the rest.
                        fields[0] = nil
                        fields[1] = nil
                        do {
                            try JSONParser.scanObject(line, names: names, into: &fields)
                        } catch {
                            let first = line.first { $0 != 0x20 && $0 != 0x09 }
                            throw LineError(line: lineNumber, message: first == UInt8(ascii: "{") || first == nil
                                ? "invalid JSON: \(error)" : "expected a JSON object: \(error)")
                        }
                        body(try plainRecord(key: fields[0], time: fields[1], raw: keepingValues ? Array(line) : nil, keyField: keyField,
                                             timeField: timeField, line: lineNumber, now: now))
                    }
                } catch {
                    return error
                }
            }
            return nil
        }
        if let failure { throw failure }
    }

    private static func envelopeRecord(_ line: UnsafeBufferPointer<UInt8>, line lineNumber: Int, now: TimestampMilliseconds) throws(LineError) -> LogRecord {
        let value: JSONValue
        do {
            value = try JSONParser.parse(Array(line))
        } catch {
            throw LineError(line: lineNumber, message: "invalid JSON: \(error)")
        }
        guard case .object(let object) = value else {
            throw LineError(line: lineNumber, message: "expected a JSON object, found \(value.typeName)")
        }
        return try envelopeRecord(object, line: lineNumber, now: now)
    }

    private static func plainRecord(key keyValue: JSONValue?, time timeValue: JSONValue?, raw: [UInt8]?, keyField: String?,
                                    timeField: String?, line: Int, now: TimestampMilliseconds) throws(LineError) -> LogRecord
    {
        var key: [UInt8]?
        if let keyField {
            guard let keyValue, !keyValue.isNull else {
                throw LineError(line: line, message: "the key field '\(keyField)' is missing")
            }
            key = keyBytes(keyValue)
        }
        var timestamp = now
        if let timeField {
            guard let timeValue, !timeValue.isNull else {
                throw LineError(line: line, message: "the time field '\(timeField)' is missing")
            }
            guard let parsed = time(timeValue) else {
                throw LineError(line: line, message: "the time field '\(timeField)' is not an RFC 3339 timestamp or epoch milliseconds of the years 0000 to 9999")
            }
            timestamp = parsed
        }
        return LogRecord(key: key, value: raw, timestamp: timestamp)
    }

    private static func envelopeRecord(_ object: JSONObject, line: Int, now: TimestampMilliseconds) throws(LineError) -> LogRecord {
        for field in object.keys where !["key", "value", "time", "headers"].contains(field) {
            throw LineError(line: line, message: "unknown envelope field '\(field)' (expected key, value, time, headers)")
        }
        let key = object["key"].flatMap { $0.isNull ? nil : keyBytes($0) }
        var value: [UInt8]?
        switch object["value"] {
        case nil, .null?: value = nil
        case .object(let inner)?:
            var bytes: [UInt8] = []
            JSONWriter.write(.object(inner), into: &bytes)
            value = bytes
        case let other?:
            throw LineError(line: line, message: "the envelope value must be an object or null, found \(other.typeName)")
        }
        if value == nil && key == nil {
            throw LineError(line: line, message: "a tombstone (null value) needs a key")
        }
        var timestamp = now
        if let timeValue = object["time"], !timeValue.isNull {
            guard let parsed = time(timeValue) else {
                throw LineError(line: line, message: "the envelope time is not an RFC 3339 timestamp or epoch milliseconds of the years 0000 to 9999")
            }
            timestamp = parsed
        }
        var headers: [LogHeader] = []
        if case .object(let headerObject)? = object["headers"] {
            for field in headerObject.fields {
                guard case .string(let text) = field.value else {
                    throw LineError(line: line, message: "header '\(field.key)' must be a string")
                }
                headers.append(LogHeader(name: field.key, text: text))
            }
        }
        return LogRecord(key: key, value: value, timestamp: timestamp, headers: headers)
    }

    private static func keyBytes(_ value: JSONValue) -> [UInt8] {
        if case .string(let text) = value { return Array(text.utf8) }
        var bytes: [UInt8] = []
        JSONWriter.write(value, into: &bytes)
        return bytes
    }

    private static func time(_ value: JSONValue) -> TimestampMilliseconds? {
        switch value {
        case .string(let text): return Timestamp.parse(text)
        case .integer(let milliseconds): return Timestamp.isInRange(milliseconds) ? milliseconds : nil
        default: return nil
        }
    }
}
