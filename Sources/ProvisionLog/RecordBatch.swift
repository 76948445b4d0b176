import ProvisionModel

/// Records read together, kept as the frames they were stored in: one buffer and a table of
/// where each record's key, value and headers lie. Reading a batch allocates twice, not
/// per record; the pipeline looks at values in place.
public struct RecordBatch: Sendable {
    public struct Entry: Sendable, Equatable {
        public var offset: Int64
        public var timestamp: TimestampMilliseconds
        /// Nil for a null key.
        public var key: Range<Int>?
        /// Nil for a tombstone.
        public var value: Range<Int>?
        /// The encoded headers (count first), empty when there are none.
        public var headers: Range<Int>
    }

    public private(set) var bytes: [UInt8] = []
    public private(set) var entries: [Entry] = []

    public init() {}

    /// A batch holding these records, as the log would return them.
    public init(records: [StoredRecord]) {
        for stored in records {
            var frame: [UInt8] = []
            RecordFrame.encode(stored.record, offset: stored.offset, into: &frame)
            frame.withUnsafeBytes { append(frame: $0, at: 0, frameBytes: frame.count) }
        }
    }

    /// Appends a record whose parts lie elsewhere (another client's buffers), copying each
    /// once; nil is a null key or a tombstone. Records must come in offset order.
    public mutating func append(offset: Int64, timestamp: TimestampMilliseconds, key: UnsafeRawBufferPointer?,
                                value: UnsafeRawBufferPointer?, headers: [LogHeader] = [])
    {
        func copy(_ part: UnsafeRawBufferPointer?) -> Range<Int>? {
            guard let part else { return nil }
            let start = bytes.count
            bytes.append(contentsOf: part)
            return start..<bytes.count
        }
        let key = copy(key)
        let value = copy(value)
        let headerStart = bytes.count
        if !headers.isEmpty {
            // As a stored frame holds them, so `record(at:)` reads them back the same way.
            func integer<T: FixedWidthInteger>(_ number: T) { withUnsafeBytes(of: number.littleEndian) { bytes.append(contentsOf: $0) } }
            integer(UInt16(truncatingIfNeeded: headers.count))
            for header in headers {
                let name = Array(header.name.utf8)
                integer(UInt16(truncatingIfNeeded: name.count))
                bytes.append(contentsOf: name)
                integer(Int32(header.value.count))
                bytes.append(contentsOf: header.value)
            }
        }
        entries.append(Entry(offset: offset, timestamp: timestamp, key: key, value: value, headers: headerStart..<bytes.count))
    }

    public var count: Int { entries.count }
    public var isEmpty: Bool { entries.isEmpty }

    /// Appends one verified frame.
    mutating func append(frame: UnsafeRawBufferPointer, at position: Int, frameBytes: Int) {
        let base = bytes.count
        bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: frame[position..<(position + frameBytes)]))
        var cursor = base + RecordFrame.headerBytes
        func integer<T: FixedWidthInteger>(_: T.Type) -> T {
            let value = bytes.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: cursor, as: T.self)) }
            cursor += MemoryLayout<T>.size
            return value
        }
        func span() -> Range<Int>? {
            let length = Int(integer(Int32.self))
            guard length >= 0 else { return nil }
            defer { cursor += length }
            return cursor..<(cursor + length)
        }
        let offset = integer(Int64.self)
        let timestamp = integer(Int64.self)
        let key = span()
        let value = span()
        let headerStart = cursor
        let headerCount = integer(UInt16.self)
        let headers = headerCount == 0 ? headerStart..<headerStart : headerStart..<(base + frameBytes)
        entries.append(Entry(offset: offset, timestamp: timestamp, key: key, value: value, headers: headers))
    }

    public mutating func reserveCapacity(bytes byteCount: Int, records: Int) {
        bytes.reserveCapacity(byteCount)
        entries.reserveCapacity(records)
    }

    /// Calls `body` with the record's value bytes in place (empty for a tombstone).
    @inline(__always)
    public func withValue<Result>(at index: Int, _ body: (UnsafeBufferPointer<UInt8>) throws -> Result) rethrows -> Result {
        try bytes.withUnsafeBufferPointer { all in
            guard let range = entries[index].value else { return try body(UnsafeBufferPointer(start: nil, count: 0)) }
            return try body(UnsafeBufferPointer(rebasing: all[range]))
        }
    }

    public func key(at index: Int) -> [UInt8]? {
        entries[index].key.map { Array(bytes[$0]) }
    }

    public func value(at index: Int) -> [UInt8]? {
        entries[index].value.map { Array(bytes[$0]) }
    }

    /// The index of the record at `offset` (entries are in offset order), or nil.
    public func index(ofOffset offset: Int64) -> Int? {
        var low = 0, high = entries.count
        while low < high {
            let middle = (low + high) / 2
            if entries[middle].offset < offset { low = middle + 1 } else { high = middle }
        }
        return low < entries.count && entries[low].offset == offset ? low : nil
    }

    /// The record with its own copies of key, value and headers.
    public func record(at index: Int) -> StoredRecord {
        let entry = entries[index]
        var headers: [LogHeader] = []
        if !entry.headers.isEmpty {
            var cursor = entry.headers.lowerBound
            bytes.withUnsafeBytes { raw in
                let count = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: cursor, as: UInt16.self))
                cursor += 2
                for _ in 0..<count {
                    let nameLength = Int(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: cursor, as: UInt16.self)))
                    cursor += 2
                    let name = String(decoding: UnsafeRawBufferPointer(rebasing: raw[cursor..<(cursor + nameLength)]), as: UTF8.self)
                    cursor += nameLength
                    let valueLength = Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: cursor, as: Int32.self)))
                    cursor += 4
                    headers.append(LogHeader(name: name, value: Array(UnsafeRawBufferPointer(rebasing: raw[cursor..<(cursor + valueLength)]))))
                    cursor += valueLength
                }
            }
        }
        return StoredRecord(offset: entry.offset, record: LogRecord(key: key(at: index), value: value(at: index),
                                                                    timestamp: entry.timestamp, headers: headers))
    }
}
