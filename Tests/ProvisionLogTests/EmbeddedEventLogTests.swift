import Foundation
import Testing
import ProvisionModel
@testable import ProvisionLog

private func temporaryDirectory() -> String {
    let path = NSTemporaryDirectory() + "provision-log-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

private func record(_ index: Int, timestamp: Int64? = nil, valueBytes: Int = 40) -> LogRecord {
    let value = "{\"n\":\(index),\"pad\":\"\(String(repeating: "x", count: valueBytes))\"}"
    return LogRecord(key: Array("k\(index % 7)".utf8), value: Array(value.utf8), timestamp: timestamp ?? Int64(index) * 1000,
                     headers: index % 3 == 0 ? [LogHeader(name: "h", text: "v\(index)")] : [])
}

private let orders = TopicPartition(topic: "orders", partition: 0)

@Suite struct EmbeddedEventLogTests {
    @Test func appendThenReadBackEveryFieldInOrder() async throws {
        let log = try EmbeddedEventLog(directory: temporaryDirectory())
        try await log.createTopic("orders", partitions: 1)
        let records = (0..<500).map { record($0) } + [LogRecord(key: Array("gone".utf8), value: nil, timestamp: 1)]
        let first = try await log.append(Array(records[0..<200]), to: orders)
        let second = try await log.append(Array(records[200...]), to: orders)
        #expect(first == 0)
        #expect(second == 200)
        #expect(try await log.endOffset(of: orders) == 501)
        let read = try await log.read(orders, from: 0, maxRecords: 10_000, maxBytes: 10_000_000)
        #expect(read.map(\.record) == records)
        #expect(read.map(\.offset) == Array(0..<501))
        #expect(read.last?.record.value == nil)  // a tombstone survives as a null value
    }

    @Test func readHonoursItsLimitsAndStartsMidSegment() async throws {
        let log = try EmbeddedEventLog(directory: temporaryDirectory(), configuration: .init(indexIntervalBytes: 256))
        try await log.createTopic("orders", partitions: 1)
        try await log.append((0..<1000).map { record($0) }, to: orders)
        let page = try await log.read(orders, from: 437, maxRecords: 10, maxBytes: 1_000_000)
        #expect(page.map(\.offset) == Array(437..<447))
        let small = try await log.read(orders, from: 0, maxRecords: 1000, maxBytes: 300)
        #expect(small.count >= 1 && small.count < 5)
        #expect(try await log.read(orders, from: 1000, maxRecords: 10, maxBytes: 1000).isEmpty)
    }

    @Test func offsetForTimestampIsTheFirstRecordAtOrAfterIt() async throws {
        let log = try EmbeddedEventLog(directory: temporaryDirectory(),
                                       configuration: .init(segmentBytesMax: 8 * 1024, indexIntervalBytes: 512))
        try await log.createTopic("orders", partitions: 1)
        // Mostly increasing times with some late arrivals, across several segments.
        var timestamps: [Int64] = []
        for index in 0..<2000 { timestamps.append(index % 10 == 9 ? Int64(index - 50) * 1000 : Int64(index) * 1000) }
        for chunk in stride(from: 0, to: 2000, by: 100) {
            try await log.append((chunk..<chunk + 100).map { record($0, timestamp: timestamps[$0]) }, to: orders)
        }
        for probe: Int64 in [-5, 0, 999, 1000, 123_456, 1_500_000, 1_998_000, 1_999_000, 5_000_000] {
            let expected = timestamps.firstIndex { $0 >= probe }.map(Int64.init) ?? 2000
            #expect(try await log.offset(forTimestamp: probe, in: orders) == expected, "probe \(probe)")
        }
    }

    @Test func rollsSegmentsNamedByBaseOffsetAndReadsAcrossThem() async throws {
        let directory = temporaryDirectory()
        let configuration = EmbeddedLogConfiguration(segmentBytesMax: 16 * 1024, indexIntervalBytes: 1024)
        do {
            let log = try EmbeddedEventLog(directory: directory, configuration: configuration)
            try await log.createTopic("orders", partitions: 1)
            for chunk in stride(from: 0, to: 3000, by: 50) {
                try await log.append((chunk..<chunk + 50).map { record($0) }, to: orders)
            }
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: "\(directory)/orders-0").sorted()
        let segments = files.filter { $0.hasSuffix(".log") }
        #expect(segments.count > 5)
        #expect(segments.first == "00000000000000000000.log")
        #expect(files.contains { $0.hasSuffix(".timeindex") } && files.contains { $0.hasSuffix(".index") })
        let reopened = try EmbeddedEventLog(directory: directory, configuration: configuration)
        #expect(try await reopened.endOffset(of: orders) == 3000)
        let all = try await reopened.read(orders, from: 0, maxRecords: 10_000, maxBytes: 100_000_000)
        #expect(all.map(\.offset) == Array(0..<3000))
        #expect(all[2999].record == record(2999))
        #expect(try await reopened.offset(forTimestamp: 2_345_000, in: orders) == 2345)
    }

    @Test func aTornTailIsTruncatedToTheLastWholeRecord() async throws {
        let directory = temporaryDirectory()
        do {
            let log = try EmbeddedEventLog(directory: directory)
            try await log.createTopic("orders", partitions: 1)
            try await log.append((0..<100).map { record($0) }, to: orders)
        }
        let path = "\(directory)/orders-0/00000000000000000000.log"
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
        // A crash mid-write leaves part of a frame.
        let handle = FileHandle(forWritingAtPath: path)!
        handle.seekToEndOfFile()
        handle.write(Data([0x40, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7]))
        handle.closeFile()
        let log = try EmbeddedEventLog(directory: directory)
        #expect(try await log.endOffset(of: orders) == 100)
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int == size)
        // Appends continue cleanly after the repair.
        #expect(try await log.append([record(100)], to: orders) == 100)
        #expect(try await log.read(orders, from: 95, maxRecords: 10, maxBytes: 100_000).map(\.offset) == Array(95...100))
    }

    @Test func aCorruptRecordCutsTheLogBeforeIt() async throws {
        let directory = temporaryDirectory()
        var frameStarts: [Int] = []
        do {
            let log = try EmbeddedEventLog(directory: directory)
            try await log.createTopic("orders", partitions: 1)
            for index in 0..<50 {
                frameStarts.append(try FileManager.default.attributesOfItem(atPath: "\(directory)/orders-0/00000000000000000000.log")[.size] as! Int)
                try await log.append([record(index)], to: orders)
            }
        }
        // Flip a byte inside record 40's value: its checksum no longer holds.
        let path = "\(directory)/orders-0/00000000000000000000.log"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[frameStarts[40] + 30] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: path))
        let log = try EmbeddedEventLog(directory: directory)
        #expect(try await log.endOffset(of: orders) == 40)
        let read = try await log.read(orders, from: 0, maxRecords: 100, maxBytes: 1_000_000)
        #expect(read.map(\.record) == (0..<40).map { record($0) })
    }

    /// Retention by age measures from when a segment was last appended to (its file's
    /// modification time), never from event times: history imported with five-year-old
    /// event times is kept.
    @Test func retentionByAgeMeasuresFromTheAppendNotTheEventTime() async throws {
        let directory = temporaryDirectory()
        let log = try EmbeddedEventLog(directory: directory, configuration: .init(segmentBytesMax: 4 * 1024, retentionAge: .seconds(3600)))
        try await log.createTopic("orders", partitions: 1)
        let fiveYearsAgo = Int64(Date().timeIntervalSince1970 * 1000) - 5 * 365 * 86_400_000
        for chunk in stride(from: 0, to: 1000, by: 20) {
            try await log.append((chunk..<chunk + 20).map { record($0, timestamp: fiveYearsAgo + Int64($0)) }, to: orders)
        }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        #expect(try log.enforceRetention(now: now) == 0, "records appended just now were deleted for their old event times")

        // Segments last appended to two hours ago expire, whole and oldest first.
        let segments = try segmentFiles(in: directory)
        #expect(segments.count > 5)
        for segment in segments.dropLast(3) { try age(segment, seconds: 7200) }
        #expect(try log.enforceRetention(now: now) == segments.count - 3)
        let start = try await log.startOffset(of: orders)
        #expect(start == Int64((segments[segments.count - 3] as NSString).lastPathComponent.prefix(20))!)
        let kept = try await log.read(orders, from: 0, maxRecords: 10_000, maxBytes: 100_000_000)
        #expect(kept.first?.offset == start && kept.last?.offset == 999)
    }

    /// A product that has not read a segment yet (paused, or its sink stalled) holds it
    /// against retention by age; only the size limit, which protects the disk, removes it.
    @Test func retentionByAgeKeepsWhatAReaderHasNotRead() async throws {
        for bytesLimit in [nil, 16 * 1024] {
            let directory = temporaryDirectory()
            let log = try EmbeddedEventLog(directory: directory, configuration: .init(segmentBytesMax: 4 * 1024, retentionAge: .seconds(3600),
                                                                                      retentionBytes: bytesLimit))
            try await log.createTopic("orders", partitions: 1)
            for chunk in stride(from: 0, to: 1000, by: 20) {
                try await log.append((chunk..<chunk + 20).map { record($0) }, to: orders)
            }
            for segment in try segmentFiles(in: directory).dropLast() { try age(segment, seconds: 7200) }
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            _ = try log.enforceRetention(now: now, unreadFrom: [orders: 300])
            let start = try await log.startOffset(of: orders)
            if bytesLimit == nil {
                #expect(start > 0 && start <= 300, "records from offset 300 on were not read yet; the log starts at \(start)")
            } else {
                #expect(start > 300, "the size limit must still protect the disk")
            }
        }
    }

    @Test func retentionBySizeKeepsThePartitionUnderTheLimit() async throws {
        let log = try EmbeddedEventLog(directory: temporaryDirectory(),
                                       configuration: .init(segmentBytesMax: 4 * 1024, retentionBytes: 16 * 1024))
        try await log.createTopic("orders", partitions: 1)
        for chunk in stride(from: 0, to: 1000, by: 20) {
            try await log.append((chunk..<chunk + 20).map { record($0) }, to: orders)
        }
        #expect(try log.enforceRetention(now: 0) > 0)
        let kept = try await log.read(orders, from: 0, maxRecords: 10_000, maxBytes: 100_000_000)
        let keptBytes = kept.reduce(0) { $0 + RecordFrame.encodedSize($1.record) }
        #expect(keptBytes <= 16 * 1024)
        #expect(kept.last?.offset == 999)
    }

    /// The wait's own timeout is an hour: only the append can end it before the test's time
    /// limit does (no timing assertion, so a loaded machine cannot fail it).
    @Test(.timeLimit(.minutes(1))) func waitingReturnsWhenRecordsArriveWithoutPolling() async throws {
        let log = try EmbeddedEventLog(directory: temporaryDirectory())
        try await log.createTopic("orders", partitions: 1)
        let clock = ContinuousClock()
        async let waited: Void = log.waitForRecords(in: orders, at: 0, timeout: .seconds(3600))
        try await Task.sleep(for: .milliseconds(100))
        try await log.append([record(0)], to: orders)
        try await waited
        #expect(try await log.endOffset(of: orders) == 1)
        // With nothing new, the wait ends at its timeout.
        let idleStart = clock.now
        try await log.waitForRecords(in: orders, at: 1, timeout: .milliseconds(200))
        #expect(clock.now - idleStart >= .milliseconds(150))
    }

    @Test func unknownTopicsAndBadNamesAreErrors() async throws {
        let log = try EmbeddedEventLog(directory: temporaryDirectory())
        await #expect(throws: EventLogError.self) { try await log.endOffset(of: orders) }
        await #expect(throws: EventLogError.self) { try await log.createTopic("../escape", partitions: 1) }
    }

    @Test func topicsSurviveReopenAndDeleteRemovesThem() async throws {
        let directory = temporaryDirectory()
        do {
            let log = try EmbeddedEventLog(directory: directory)
            try await log.createTopic("orders", partitions: 1)
            try await log.createTopic("payments", partitions: 1)
            try await log.append([record(1)], to: orders)
            try await log.deleteTopic("payments")
        }
        let log = try EmbeddedEventLog(directory: directory)
        #expect(try await log.describeTopics().map(\.name) == ["orders"])
        #expect(try await log.describeTopics().first?.partitions.first?.endOffset == 1)
    }

    @Test func checksumIsCRC32C() {
        // The standard check value of CRC-32C.
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        // The instruction and the tables agree on every length and alignment.
        let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        bytes.withUnsafeBytes { raw in
            for start in 0..<9 {
                for length in [0, 1, 7, 8, 9, 63, 500, 991 - start] {
                    let slice = UnsafeRawBufferPointer(rebasing: raw[start..<(start + length)])
                    #expect(CRC32C.checksum(slice) == CRC32C.softwareChecksum(slice))
                }
            }
        }
    }
}

/// The data files of every segment under a log directory, in offset order.
private func segmentFiles(in directory: String) throws -> [String] {
    let enumerator = FileManager.default.enumerator(atPath: directory)
    var files: [String] = []
    while let path = enumerator?.nextObject() as? String {
        if path.hasSuffix(".log") { files.append(directory + "/" + path) }
    }
    return files.sorted { ($0 as NSString).lastPathComponent < ($1 as NSString).lastPathComponent }
}

/// Sets a file's modification time to `seconds` ago, as if last written then.
private func age(_ path: String, seconds: Double) throws {
    try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-seconds)], ofItemAtPath: path)
}
