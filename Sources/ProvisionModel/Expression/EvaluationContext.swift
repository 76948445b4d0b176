/// What an expression sees while it is evaluated for one event.
public struct EvaluationContext: Sendable {
    /// The event's top-level fields that expressions read, by slot (see `FieldSlots`);
    /// nil where the event lacks the field.
    public var slots: [JSONValue?]
    /// The event's time: the dataset's time field, or the log timestamp.
    public var eventTime: TimestampMilliseconds
    /// The time `now()` returns; fixed per batch so one batch sees one instant.
    public var now: TimestampMilliseconds

    public init(slots: [JSONValue?], eventTime: TimestampMilliseconds, now: TimestampMilliseconds) {
        self.slots = slots
        self.eventTime = eventTime
        self.now = now
    }
}

/// The top-level fields a set of expressions reads, each given a slot number at compile
/// time. At run time only these fields are decoded from an event, and an expression finds
/// its field by index instead of by name.
public struct FieldSlots: Sendable, Equatable {
    public private(set) var names: [String] = []
    /// Per object field, the fields inside it that expressions read (`customer.name`).
    public private(set) var nestedReads: [String: Set<String>] = [:]
    /// Object fields some expression reads whole (`customer is null`, or passed through).
    public private(set) var wholeReads: Set<String> = []

    /// What an expression reads of a field: a path into it, or (one component) all of it.
    mutating func noteRead(_ path: [String]) {
        if path.count > 1 {
            nestedReads[path[0], default: []].insert(path[1])
        } else {
            wholeReads.insert(path[0])
        }
    }

    /// True when some expression compiled so far reads the top-level field `name`.
    public func reads(_ name: String) -> Bool {
        wholeReads.contains(name) || nestedReads[name] != nil
    }

    /// The fields of object `name` that expressions read, or nil when some read it whole.
    public func fieldsRead(in name: String) -> Set<String>? {
        wholeReads.contains(name) ? nil : nestedReads[name] ?? []
    }

    public init(_ names: [String] = []) {
        for name in names { _ = slot(for: name) }
    }

    /// The slot of `name`, assigning the next one if it has none yet.
    public mutating func slot(for name: String) -> Int {
        if let index = names.firstIndex(of: name) { return index }
        names.append(name)
        return names.count - 1
    }

    /// The slots filled from a parsed object, for callers that have one already.
    public func values(from object: JSONObject) -> [JSONValue?] {
        names.map { object[$0] }
    }
}

/// The names an expression may refer to: the fields of the dataset it reads.
public struct ExpressionScope: Sendable {
    public var datasetName: String
    public var schema: Schema

    public init(datasetName: String, schema: Schema) {
        self.datasetName = datasetName
        self.schema = schema
    }
}

/// Reads a typed field out of a JSON event. A value that does not fit the declared type
/// is an operating error of that event, not of the pipeline.
public enum FieldReader {
    public static func read(_ json: JSONValue?, as type: ValueType, path: String) throws(EvaluationError) -> Value {
        guard let json else { return .null }
        switch (type, json) {
        case (_, .null): return .null
        case (.string, .string(let text)): return .string(text)
        case (.integer, .integer(let integer)): return .integer(integer)
        case (.integer, .decimal(let number)):
            // `5.0` is an integer; `5.5` is not.
            guard let integer = number.exactInt64 else { break }
            return .integer(integer)
        case (.decimal, .integer(let integer)): return .decimal(DecimalNumber(integer))
        case (.decimal, .decimal(let number)): return .decimal(number)
        case (.decimal, .number):
            throw EvaluationError("field '\(path)': \(JSONWriter.string(json).prefix(60)) does not fit a decimal (at most 38 digits, 38 after the point)")
        case (.decimal, .string(let text)):
            // Money is often sent as a string to keep its digits; accept that.
            guard let number = DecimalNumber(text) else { break }
            return .decimal(number)
        case (.boolean, .bool(let flag)): return .boolean(flag)
        case (.timestamp, .string(let text)):
            guard let milliseconds = Timestamp.parse(text) else {
                throw EvaluationError("field '\(path)': '\(text)' is not an RFC 3339 timestamp")
            }
            return .timestamp(milliseconds)
        case (.timestamp, .integer(let milliseconds)):
            guard Timestamp.isInRange(milliseconds) else {
                throw EvaluationError("field '\(path)': \(milliseconds) milliseconds is outside the years 0000 to 9999")
            }
            return .timestamp(milliseconds)
        case (.json, _), (.object, .object): return .json(json)
        default: break
        }
        throw EvaluationError("field '\(path)': expected \(type.name), found \(json.typeName) \(JSONWriter.string(json).prefix(60))")
    }
}
