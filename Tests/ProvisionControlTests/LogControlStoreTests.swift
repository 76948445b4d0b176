import Foundation
import Testing
import ProvisionLog
import ProvisionModel
import ProvisionPipeline
@testable import ProvisionControl

private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

private func openLog() throws -> EmbeddedEventLog {
    try EmbeddedEventLog(directory: NSTemporaryDirectory() + "provision-log-store-\(UUID().uuidString)")
}

/// The control store and the checkpoints kept in topics of the event log (as on Kafka), here
/// on the embedded log; the integration tests run the same stores on two Kafka-API servers.
@Suite(.timeLimit(.minutes(1))) struct LogControlStoreTests {
    @Test func commitsAreCheckedVersionedAndReadBackByTheNextServer() async throws {
        let log = try openLog()
        let store = try await LogControlStore(log: log)
        let first = try await store.commit([RecordWrite(key: .dataset("orders"), value: bytes("d"), precondition: .absent),
                                            RecordWrite(key: .product("a"), value: bytes("p1"), precondition: .absent),
                                            RecordWrite(key: .productStatus("a"), value: bytes("s"), precondition: .none)], durable: true)
        let second = try await store.commit([RecordWrite(key: .product("a"), value: bytes("p2"), precondition: .version(first))], durable: true)
        #expect(second == first + 1)
        await #expect(throws: StoreConflict(key: .product("a"), expected: .version(first), found: second)) {
            try await store.commit([RecordWrite(key: .product("b"), value: bytes("x"), precondition: .absent),
                                    RecordWrite(key: .product("a"), value: bytes("p3"), precondition: .version(first))], durable: true)
        }
        let third = try await store.commit([RecordWrite(key: .productStatus("a"), value: nil, precondition: .none),
                                            RecordWrite(key: .dataset("orders"), value: bytes("d2"), precondition: .version(first))],
                                           durable: false)
        let before = try await store.snapshot()
        #expect(Set(before.records.keys) == [.dataset("orders"), .product("a")])
        #expect(before.records[.product("a")] == VersionedRecord(resourceVersion: second, value: bytes("p2")))
        #expect(before.records[.dataset("orders")] == VersionedRecord(resourceVersion: third, value: bytes("d2")))

        let reopened = try await LogControlStore(log: log)
        let after = try await reopened.snapshot()
        #expect(after.records == before.records)
        #expect(after.resourceVersion == third)
        #expect(try await reopened.commit([RecordWrite(key: .product("b"), value: bytes("b"), precondition: .absent)], durable: true) == third + 1)
    }

    /// A server killed between a multi-record commit's intent and its records: the next one
    /// to open the topic applies the whole commit and finishes it with the intent's tombstone.
    @Test func aCommitLeftPartWayIsFinishedByTheNextServer() async throws {
        let log = try openLog()
        let store = try await LogControlStore(log: log)
        let created = try await store.commit([RecordWrite(key: .product("a"), value: bytes("1"), precondition: .absent)], durable: true)
        // What a writer killed part-way leaves: the intent for version 2, and one of its two records.
        let partition = store.partition
        let events = [StoreEvent(resourceVersion: created + 1, key: .product("a"), value: nil),
                      StoreEvent(resourceVersion: created + 1, key: .product("b"), value: bytes("2"))]
        let header = [LogHeader(name: "provision-version", value: bytes("\(created + 1)"))]
        try await log.append([LogRecord(key: bytes("_commit/\(created + 1)"), value: EmbeddedControlStore.encodeFrame(events), timestamp: 1, headers: header),
                              LogRecord(key: bytes("product/a"), value: nil, timestamp: 1, headers: header)], to: partition)

        let reopened = try await LogControlStore(log: log)
        let snapshot = try await reopened.snapshot()
        #expect(Set(snapshot.records.keys) == [.product("b")])
        #expect(snapshot.records[.product("b")]?.resourceVersion == created + 1)
        let tail = try await log.readToEnd(partition).suffix(3).map { String(decoding: $0.record.key ?? [], as: UTF8.self) + ($0.record.value == nil ? " deleted" : "") }
        #expect(tail == ["product/a deleted", "product/b", "_commit/\(created + 1) deleted"])
        // And a third server finds nothing left to finish.
        let count = try await log.readToEnd(partition).count
        _ = try await LogControlStore(log: log)
        #expect(try await log.readToEnd(partition).count == count)
    }

    @Test func aWatchDeliversEveryChangeAfterItsVersion() async throws {
        let store = try await LogControlStore(log: try openLog())
        let start = try await store.commit([RecordWrite(key: .product("a"), value: bytes("1"), precondition: .absent)], durable: true)
        _ = try await store.commit([RecordWrite(key: .product("a"), value: bytes("2"), precondition: .none)], durable: true)
        let stream = try await store.watch(from: start)
        _ = try await store.commit([RecordWrite(key: .product("a"), value: nil, precondition: .none),
                                    RecordWrite(key: .dataset("d"), value: bytes("x"), precondition: .absent)], durable: true)
        var events: [StoreEvent] = []
        for try await event in stream {
            events.append(event)
            if events.count == 3 { break }
        }
        #expect(events == [StoreEvent(resourceVersion: start + 1, key: .product("a"), value: bytes("2")),
                           StoreEvent(resourceVersion: start + 2, key: .product("a"), value: nil),
                           StoreEvent(resourceVersion: start + 2, key: .dataset("d"), value: bytes("x"))])
    }

    /// Concurrent commits with the same precondition: exactly one wins, as with the file.
    @Test func concurrentCreatesOfOneObjectHaveOneWinner() async throws {
        let store = try await LogControlStore(log: try openLog())
        let winners = await withTaskGroup(of: Bool.self) { group in
            for writer in 0..<8 {
                group.addTask {
                    (try? await store.commit([RecordWrite(key: .product("x"), value: bytes("\(writer)"), precondition: .absent)], durable: true)) != nil
                }
            }
            var count = 0
            for await won in group where won { count += 1 }
            return count
        }
        #expect(winners == 1)
    }

    @Test func checkpointsAreSavedRemovedAndReadBackByTheNextServer() async throws {
        let log = try openLog()
        let store = try await LogCheckpointStore(log: log)
        try await store.save(Checkpoint(offsets: [0: 10, 1: 7], recordsWritten: 17, sinkPosition: 900), for: "a")
        try await store.save(Checkpoint(offsets: [0: 12, 1: 9], recordsWritten: 21, sinkPosition: 1100), for: "a")
        try await store.save(Checkpoint(offsets: [0: 1]), for: "b")
        try await store.remove("b")
        let reopened = try await LogCheckpointStore(log: log)
        #expect(try await reopened.load("a") == Checkpoint(offsets: [0: 12, 1: 9], recordsWritten: 21, sinkPosition: 1100))
        #expect(try await reopened.load("b") == nil)
    }

    /// The API never lists, reads or writes the server's own topics.
    @Test func theServersOwnTopicsAreHiddenFromTheAPI() async throws {
        let log = try openLog()
        _ = try await LogControlStore(log: log)
        let topics = Topics(log: log)
        #expect(try await topics.describe().isEmpty)
        #expect(try await topics.page(of: LogControlStore.defaultTopic, from: 0, limit: 10, wait: nil) == nil)
        await #expect(throws: EventLogError.self) {
            try await topics.append([LogRecord(key: nil, value: bytes("{}"), timestamp: 1)], to: LogControlStore.defaultTopic)
        }
    }
}
