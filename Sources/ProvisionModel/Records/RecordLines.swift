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

    /// Each line's record, in order; without `keepingValues` a plain line's record has no
    /// value (it was only checked). Lines are found with memchr and looked at in place: the
    /// one copy made of a line is its record's value.
    private static func scan(_ bytes: [UInt8], keyField: String?, timeField: String?, envelope: Bool, now: TimestampMilliseconds,
                             keepingValues: Bool, _ body: (LogRecord) -> Void) throws(LineError)
    {
        let names = JSONFieldNames([keyField ?? "", timeField ?? ""])
        var fields: [JSONValue?] = [nil, nil]
        let failure: LineError? = bytes.withUnsafeBufferPointer { buffer -> LineError? in
            guard let base = buffer.baseAddress else { return nil }
            let count = buffer.count
            var lineNumber = 0
            var lineStart = 0
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
