import ProvisionModel

/// The value a join matches on, as the record keys `produce` writes compare: a string as its
/// UTF-8 bytes, anything else as its JSON text. Up to 16 bytes (most ids) are kept inline, so
/// hashing and comparing one reads no other memory: join state is a hash table of 100,000s
/// of these, looked up once per event.
public struct JoinKey: Hashable, Sendable {
    private var first: UInt64 = 0
    private var second: UInt64 = 0
    private var count: Int
    /// The bytes after the sixteenth, for longer keys.
    private var rest: [UInt8]?

    public init(_ bytes: some Collection<UInt8>) {
        count = bytes.count
        for (index, byte) in bytes.prefix(16).enumerated() {
            if index < 8 {
                first |= UInt64(byte) << (8 * UInt64(index))
            } else {
                second |= UInt64(byte) << (8 * UInt64(index - 8))
            }
        }
        if count > 16 { rest = Array(bytes.dropFirst(16)) }
    }

    /// The key of a JSON value, or nil for null or a missing field: such an event matches nothing.
    public init?(_ value: JSONValue?) {
        switch value {
        case nil, .null?: return nil
        case .string(let text)?: self.init(text.utf8)
        case .decimal(let number)? where number.exactInt64 != nil:
            // `7.0` joins `7`, as the integer field it is read as.
            var bytes: [UInt8] = []
            JSONWriter.writeInteger(number.exactInt64!, into: &bytes)
            self.init(bytes)
        case let value?:
            var bytes: [UInt8] = []
            JSONWriter.write(value, into: &bytes)
            self.init(bytes)
        }
    }
}
