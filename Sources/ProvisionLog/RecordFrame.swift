import ProvisionModel

/// The on-disk frame of one record, little-endian:
///
///     u32 payloadLength  u32 crc32c(payload)
///     payload: i64 offset, i64 timestamp, i32 keyLength (-1 = null), key,
///              i32 valueLength (-1 = null), value, u16 headerCount,
///              per header: u16 nameLength, name, i32 valueLength, value
enum RecordFrame {
    static let headerBytes = 8
    /// A frame larger than this is corruption, not a record.
    static let payloadBytesMax = 64 * 1024 * 1024

    static func encodedSize(_ record: LogRecord) -> Int {
        var size = headerBytes + 8 + 8 + 4 + (record.key?.count ?? 0) + 4 + (record.value?.count ?? 0) + 2
        for header in record.headers { size += 2 + header.name.utf8.count + 4 + header.value.count }
        return size
    }

    static func encode(_ record: LogRecord, offset: Int64, into buffer: inout [UInt8]) {
        let frameStart = buffer.count
        buffer.append(contentsOf: repeatElement(0, count: headerBytes))
        appendInteger(offset, to: &buffer)
        appendInteger(record.timestamp, to: &buffer)
        appendBytes(record.key, to: &buffer)
        appendBytes(record.value, to: &buffer)
        appendInteger(UInt16(truncatingIfNeeded: record.headers.count), to: &buffer)
        for header in record.headers {
            let name = Array(header.name.utf8)
            appendInteger(UInt16(truncatingIfNeeded: name.count), to: &buffer)
            buffer.append(contentsOf: name)
            appendBytes(header.value, to: &buffer)
        }
        let payloadLength = buffer.count - frameStart - headerBytes
        let crc = buffer.withUnsafeBytes { bytes in
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[(frameStart + headerBytes)...]))
        }
        buffer.withUnsafeMutableBytes { bytes in
            bytes.storeBytes(of: UInt32(payloadLength).littleEndian, toByteOffset: frameStart, as: UInt32.self)
            bytes.storeBytes(of: crc.littleEndian, toByteOffset: frameStart + 4, as: UInt32.self)
        }
    }

    private static func appendInteger<T: FixedWidthInteger>(_ value: T, to buffer: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { buffer.append(contentsOf: $0) }
    }

    private static func appendBytes(_ bytes: [UInt8]?, to buffer: inout [UInt8]) {
        guard let bytes else {
            appendInteger(Int32(-1), to: &buffer)
            return
        }
        appendInteger(Int32(bytes.count), to: &buffer)
        buffer.append(contentsOf: bytes)
    }

    /// What a scan found at a position.
    enum Scan {
        case record(offset: Int64, timestamp: Int64, frameBytes: Int)
        /// Not enough bytes for a whole frame.
        case incomplete
        /// A frame whose checksum or structure does not hold.
        case corrupt(String)
    }

    /// Looks at the frame starting at `position` without decoding its key and value.
    static func scan(_ bytes: UnsafeRawBufferPointer, at position: Int) -> Scan {
        guard bytes.count - position >= headerBytes else { return .incomplete }
        let payloadLength = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: UInt32.self)))
        guard payloadLength >= 8 + 8 + 4 + 4 + 2, payloadLength <= payloadBytesMax else {
            return .corrupt("frame length \(payloadLength) is impossible")
        }
        guard bytes.count - position - headerBytes >= payloadLength else { return .incomplete }
        let storedCRC = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: position + 4, as: UInt32.self))
        let payloadStart = position + headerBytes
        let payload = UnsafeRawBufferPointer(rebasing: bytes[payloadStart..<(payloadStart + payloadLength)])
        guard CRC32C.checksum(payload) == storedCRC else { return .corrupt("checksum mismatch") }
        let offset = Int64(littleEndian: payload.loadUnaligned(fromByteOffset: 0, as: Int64.self))
        let timestamp = Int64(littleEndian: payload.loadUnaligned(fromByteOffset: 8, as: Int64.self))
        return .record(offset: offset, timestamp: timestamp, frameBytes: headerBytes + payloadLength)
    }
}
