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
        let names = JSONFieldNames([keyField ?? "", timeField ?? ""])
        var lineNumber = 0
        var lineStart = 0
        let count = bytes.count
        while lineStart < count {
            lineNumber += 1
            var lineEnd = lineStart
            while lineEnd < count, bytes[lineEnd] != 0x0A { lineEnd += 1 }
            var contentEnd = lineEnd
            if contentEnd > lineStart, bytes[contentEnd - 1] == 0x0D { contentEnd -= 1 }
            defer { lineStart = lineEnd + 1 }
            let line = Array(bytes[lineStart..<contentEnd])
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
            if envelope {
                let value: JSONValue
                do {
                    value = try JSONParser.parse(line)
                } catch {
                    throw LineError(line: lineNumber, message: "invalid JSON: \(error)")
                }
                guard case .object(let object) = value else {
                    throw LineError(line: lineNumber, message: "expected a JSON object, found \(value.typeName)")
                }
                records.append(try envelopeRecord(object, line: lineNumber, now: now))
            } else {
                // The value is stored as sent: check it is one JSON object and read only the key
                // and time fields, without building the rest.
                var fields: [JSONValue?] = [nil, nil]
                do {
                    try line.withUnsafeBufferPointer { buffer throws(JSONParseError) in
                        try JSONParser.scanObject(buffer, names: names, into: &fields)
                    }
                } catch {
                    let first = line.first { $0 != 0x20 && $0 != 0x09 }
                    throw LineError(line: lineNumber, message: first == UInt8(ascii: "{") || first == nil
                        ? "invalid JSON: \(error)" : "expected a JSON object: \(error)")
                }
                records.append(try plainRecord(key: fields[0], time: fields[1], raw: line, keyField: keyField,
                                               timeField: timeField, line: lineNumber, now: now))
            }
        }
        return records
    }

    private static func plainRecord(key keyValue: JSONValue?, time timeValue: JSONValue?, raw: [UInt8], keyField: String?,
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
