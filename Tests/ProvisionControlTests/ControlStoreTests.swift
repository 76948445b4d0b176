import Foundation
import Testing
import ProvisionModel
@testable import ProvisionControl

private func temporaryDirectory() -> String {
    NSTemporaryDirectory() + "provision-store-\(UUID().uuidString)"
}

private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

@Suite(.timeLimit(.minutes(1))) struct ControlStoreTests {
    @Test func everyCommitTakesTheNextVersionAndEachRecordKeepsItsOwn() throws {
        let store = try EmbeddedControlStore(directory: temporaryDirectory())
        let first = try store.commitNow([RecordWrite(key: .product("a"), value: bytes("1"), precondition: .absent),
                                         RecordWrite(key: .product("b"), value: bytes("1"), precondition: .absent)], durable: true)
        let second = try store.commitNow([RecordWrite(key: .product("a"), value: bytes("2"), precondition: .version(first))], durable: true)
        #expect(second == first + 1)
        let snapshot = store.snapshotNow()
        #expect(snapshot.resourceVersion == second)
        #expect(snapshot.records[.product("a")] == VersionedRecord(resourceVersion: second, value: bytes("2")))
        #expect(snapshot.records[.product("b")] == VersionedRecord(resourceVersion: first, value: bytes("1")))
    }

    /// Compare-and-swap: a write against a version that is no longer current, a create of
    /// something that exists, fail with the versions involved, and nothing of that commit is
    /// written, not even its other records.
    @Test func aStaleWriteIsAConflictAndItsWholeCommitIsRejected() throws {
        let store = try EmbeddedControlStore(directory: temporaryDirectory())
        let created = try store.commitNow([RecordWrite(key: .product("a"), value: bytes("1"), precondition: .absent)], durable: true)
        _ = try store.commitNow([RecordWrite(key: .product("a"), value: bytes("2"), precondition: .version(created))], durable: true)
        #expect(throws: StoreConflict(key: .product("a"), expected: .version(created), found: created + 1)) {
            try store.commitNow([RecordWrite(key: .product("b"), value: bytes("1"), precondition: .absent),
                                 RecordWrite(key: .product("a"), value: bytes("3"), precondition: .version(created))], durable: true)
        }
        #expect(throws: StoreConflict(key: .product("a"), expected: .absent, found: created + 1)) {
            try store.commitNow([RecordWrite(key: .product("a"), value: bytes("x"), precondition: .absent)], durable: true)
        }
        let snapshot = store.snapshotNow()
        #expect(snapshot.records[.product("b")] == nil)
        #expect(snapshot.records[.product("a")]?.value == bytes("2"))
        #expect(snapshot.resourceVersion == created + 1)
    }

    @Test func aReopenedStoreHasEveryCommitAndDeletesStayDeleted() throws {
        let directory = temporaryDirectory()
        do {
            let store = try EmbeddedControlStore(directory: directory)
            let version = try store.commitNow([RecordWrite(key: .dataset("orders"), value: bytes("d"), precondition: .absent),
                                               RecordWrite(key: .product("a"), value: bytes("p"), precondition: .absent),
                                               RecordWrite(key: .productStatus("a"), value: bytes("s"), precondition: .none)], durable: true)
            _ = try store.commitNow([RecordWrite(key: .product("a"), value: nil, precondition: .version(version)),
                                     RecordWrite(key: .productStatus("a"), value: nil, precondition: .none)], durable: true)
        }
        let reopened = try EmbeddedControlStore(directory: directory)
        let snapshot = reopened.snapshotNow()
        #expect(Set(snapshot.records.keys) == [.dataset("orders")])
        #expect(snapshot.resourceVersion == 2)
        // Versions keep increasing after a restart.
        #expect(try reopened.commitNow([RecordWrite(key: .product("a"), value: bytes("again"), precondition: .absent)], durable: true) == 3)
    }

    /// A crash in the middle of a commit's write leaves part of a frame: opening the store
    /// cuts it off, and every commit before it is there. Tried at every length of the torn
    /// frame, and with a flipped byte inside a whole one.
    @Test func aTornOrCorruptLastCommitIsCutOffAndTheRestLoads() throws {
        let directory = temporaryDirectory()
        let store = try EmbeddedControlStore(directory: directory)
        _ = try store.commitNow([RecordWrite(key: .product("kept"), value: bytes("yes"), precondition: .absent)], durable: true)
        let whole = store.fileBytes
        _ = try store.commitNow([RecordWrite(key: .product("torn"), value: bytes(String(repeating: "x", count: 300)),
                                             precondition: .absent)], durable: true)
        let full = try Data(contentsOf: URL(fileURLWithPath: store.path))
        for length in stride(from: whole, to: full.count, by: 7) + [full.count - 1] {
            let copy = temporaryDirectory()
            try FileManager.default.createDirectory(atPath: copy, withIntermediateDirectories: true)
            try full.prefix(length).write(to: URL(fileURLWithPath: copy + "/objects.log"))
            let reopened = try EmbeddedControlStore(directory: copy)
            #expect(Set(reopened.snapshotNow().records.keys) == [.product("kept")], "torn at \(length)")
            #expect(reopened.fileBytes == whole)
            // The next commit goes where the torn one was, and is read back.
            _ = try reopened.commitNow([RecordWrite(key: .product("next"), value: bytes("1"), precondition: .absent)], durable: true)
            #expect(Set(try EmbeddedControlStore(directory: copy).snapshotNow().records.keys) == [.product("kept"), .product("next")])
        }
        var corrupt = full
        corrupt[full.count - 5] ^= 0x40
        let copy = temporaryDirectory()
        try FileManager.default.createDirectory(atPath: copy, withIntermediateDirectories: true)
        try corrupt.write(to: URL(fileURLWithPath: copy + "/objects.log"))
        #expect(Set(try EmbeddedControlStore(directory: copy).snapshotNow().records.keys) == [.product("kept")])
    }

    /// A status update costs one small record whatever the number of products, and the file
    /// stays near the size of its live records.
    @Test func statusUpdatesCostOneRecordAndCompactionBoundsTheFile() throws {
        var configuration = EmbeddedControlStore.Configuration()
        configuration.compactionMinimumBytes = 256 * 1024
        let directory = temporaryDirectory()
        let store = try EmbeddedControlStore(directory: directory, configuration: configuration)
        let spec = bytes(String(repeating: "s", count: 500))
        _ = try store.commitNow((0..<2000).map { RecordWrite(key: .product("p\($0)"), value: spec, precondition: .absent) },
                                durable: true)
        let before = store.fileBytes
        _ = try store.commitNow([RecordWrite(key: .productStatus("p7"), value: bytes("{\"phase\":\"Live\"}"), precondition: .none)],
                                durable: false)
        #expect(store.fileBytes - before < 64)
        for round in 0..<3000 {
            _ = try store.commitNow([RecordWrite(key: .productStatus("p\(round % 2000)"), value: bytes("{\"lag\":\(round)}"),
                                                 precondition: .none)], durable: false)
        }
        // 2000 specs and 2000 statuses live: about 1.1 MB; without compaction 3000 more frames.
        #expect(store.fileBytes < 2 * 1024 * 1024)
        let reopened = try EmbeddedControlStore(directory: directory)
        #expect(reopened.snapshotNow().records.count == 4000)
        #expect(reopened.snapshotNow().records[.productStatus("p999")]?.value == bytes("{\"lag\":2999}"))
        #expect(reopened.snapshotNow().resourceVersion == store.snapshotNow().resourceVersion)
    }

    @Test func aWatchDeliversEveryChangeAfterItsVersionInOrder() async throws {
        let store = try EmbeddedControlStore(directory: temporaryDirectory())
        let start = try store.commitNow([RecordWrite(key: .product("a"), value: bytes("1"), precondition: .absent)], durable: true)
        _ = try store.commitNow([RecordWrite(key: .product("a"), value: bytes("2"), precondition: .none)], durable: true)
        let stream = try await store.watch(from: start)
        _ = try store.commitNow([RecordWrite(key: .product("a"), value: nil, precondition: .none),
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

    /// Changes older than the history kept cannot be streamed: the watch says so instead of
    /// silently skipping them.
    @Test func aWatchFromBeforeTheKeptHistoryExpires() async throws {
        var configuration = EmbeddedControlStore.Configuration()
        configuration.historyLimit = 10
        let store = try EmbeddedControlStore(directory: temporaryDirectory(), configuration: configuration)
        for index in 0..<30 {
            _ = try store.commitNow([RecordWrite(key: .productStatus("p"), value: bytes("\(index)"), precondition: .none)], durable: false)
        }
        await #expect(throws: WatchExpired.self) { _ = try await store.watch(from: 5) }
        let recent = try await store.watch(from: 25)
        var seen: [ResourceVersion] = []
        for try await event in recent {
            seen.append(event.resourceVersion)
            if seen.count == 5 { break }
        }
        #expect(seen == [26, 27, 28, 29, 30])
        // A reopened store has no history: only a watch from its current version is served.
        await #expect(throws: WatchExpired.self) {
            _ = try await EmbeddedControlStore(directory: (store.path as NSString).deletingLastPathComponent).watch(from: 29)
        }
    }

    /// A watcher that stops reading while changes keep coming is ended with `WatchExpired`
    /// once its buffer is full, not left with a silent gap.
    @Test func aWatcherTooFarBehindIsEndedWithWatchExpired() async throws {
        var configuration = EmbeddedControlStore.Configuration()
        configuration.watchBuffer = 8
        let store = try EmbeddedControlStore(directory: temporaryDirectory(), configuration: configuration)
        let stream = try await store.watch(from: 0)
        for index in 0..<20 {
            _ = try store.commitNow([RecordWrite(key: .productStatus("p"), value: bytes("\(index)"), precondition: .none)], durable: false)
        }
        var delivered = 0
        await #expect(throws: WatchExpired.self) {
            for try await _ in stream { delivered += 1 }
        }
        #expect(delivered == 8)
    }

    /// A data directory from before records: its `state.json` is moved into the store once,
    /// products keep their status, and the file is renamed so it is not migrated again.
    @Test func aLegacyStateFileIsMigratedOnce() async throws {
        let directory = temporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        // Written by the server before records: a dataset and a paused product with its status.
        let legacy = #"""
            {"datasets":{"orders":{"createdAt":1796137627414,"dataset":{"metadata":{"name":"orders"},"spec":{"key":"id","schema":[{"name":"id","type":"string"},{"name":"amount","type":"decimal"}],"topic":"orders"}},"generation":1,"managedBy":"cli"}},"products":{"p":{"build":1,"buildStartedAt":1796137627414,"createdAt":1796137627414,"deleting":false,"generation":1,"managedBy":"cli","paused":true,"product":{"metadata":{"name":"p","team":"risk"},"spec":{"backfill":{"mode":"all"},"deletionPolicy":"Retain","from":"orders","sink":{"file":{"format":"jsonl","path":"p.jsonl"}},"where":"amount > 1"}},"status":{"checkpoint":{"0":0},"conditions":[{"lastTransitionTime":"2026-12-01T15:07:09.474Z","message":"paused by request; resume to continue from the checkpoint","reason":"Paused","status":"False","type":"Ready"},{"lastTransitionTime":"2026-12-01T15:07:09.474Z","message":"","reason":"Paused","status":"False","type":"Reconciling"},{"lastTransitionTime":"2026-12-01T15:07:09.474Z","message":"","reason":"Paused","status":"False","type":"Stalled"}],"deadLetterTopic":"_deadletter.p","deadLettered":0,"lag":0,"observedGeneration":1,"output":"file:\/\/\/tmp\/legacy\/d\/files\/p.jsonl","phase":"Paused","recordsWritten":0}}}}
            """#
        try legacy.write(toFile: directory + "/state.json", atomically: true, encoding: .utf8)
        let store = try Reconciler.openEmbeddedStore(directory: directory, logger: .init(label: "test"))
        let state = try ControlRecords.state(from: store.snapshotNow())
        #expect(state.datasets["orders"]?.dataset.spec.key == "id")
        #expect(state.products["p"]?.build == 1)
        #expect(state.products["p"]?.paused == true)
        #expect(state.products["p"]?.status.phase == .paused)
        #expect(state.products["p"]?.status.deadLetterTopic == "_deadletter.p")
        #expect(state.products["p"]?.product.spec.filter != nil)
        #expect(state.products["p"]?.manager == .cli)
        #expect(!FileManager.default.fileExists(atPath: directory + "/state.json"))
        #expect(FileManager.default.fileExists(atPath: directory + "/state.json.migrated"))
        let again = try Reconciler.openEmbeddedStore(directory: directory, logger: .init(label: "test"))
        #expect(again.snapshotNow().resourceVersion == store.snapshotNow().resourceVersion)
    }
}

@Suite struct WorkQueueTests {
    @Test func aKeyIsQueuedOnceHoweverOftenItIsAdded() {
        var queue = WorkQueue<String>()
        for _ in 0..<5 { queue.add("a") }
        queue.add("b")
        #expect(queue.next(now: 0) == "a")
        #expect(queue.next(now: 0) == "b")
        #expect(queue.next(now: 0) == nil)
    }

    /// A key added while it is processed is not handed to a second worker; it comes back
    /// once, after `done`, so the latest state is reconciled.
    @Test func aKeyAddedWhileProcessingRunsAgainAfterDoneAndNeverTwiceAtOnce() {
        var queue = WorkQueue<String>()
        queue.add("a")
        #expect(queue.next(now: 0) == "a")
        queue.add("a")
        queue.add("a")
        #expect(queue.next(now: 0) == nil)
        queue.done("a")
        #expect(queue.next(now: 0) == "a")
        queue.done("a")
        #expect(queue.next(now: 0) == nil)
    }

    @Test func aRequeueAfterADelayFallsDueOnTheFakeClock() {
        var queue = WorkQueue<String>()
        queue.add("a", after: .seconds(5), now: 1000)
        queue.add("a", after: .seconds(2), now: 1000)  // the earlier wins
        #expect(queue.nextDue == 3000)
        #expect(queue.next(now: 2999) == nil)
        #expect(queue.next(now: 3000) == "a")
        queue.done("a")
        #expect(queue.nextDue == nil)
    }

    @Test func failuresBackOffPerKeyAndForgetResets() {
        var queue = WorkQueue<String>(backoff: .init(initial: .milliseconds(100), cap: .seconds(10)))
        queue.add("a")
        _ = queue.next(now: 0)
        // With the jitter at its middle a delay is three quarters of the ceiling.
        #expect(queue.failed("a", now: 0, unitRandom: 0.5) == .milliseconds(75))
        queue.done("a")
        #expect(queue.next(now: 74) == nil)
        #expect(queue.next(now: 75) == "a")
        #expect(queue.failed("a", now: 75, unitRandom: 0.5) == .milliseconds(150))
        queue.done("a")
        #expect(queue.next(now: 225) == "a")
        for _ in 0..<20 { _ = queue.failed("a", now: 0, unitRandom: 0.999) }
        #expect(queue.failed("a", now: 0, unitRandom: 1) == .seconds(10))  // capped
        queue.forget("a")
        #expect(queue.failed("a", now: 0, unitRandom: 0.5) == .milliseconds(75))
        #expect(queue.failureCount("b") == 0)  // another key's backoff is its own
    }

    /// One slow product never holds another: a worker busy with one key leaves the others
    /// to the next worker.
    @Test func aKeyInProcessDoesNotHoldOthers() {
        var queue = WorkQueue<String>()
        queue.add("slow")
        queue.add("fast")
        #expect(queue.next(now: 0) == "slow")
        queue.add("slow")
        #expect(queue.next(now: 0) == "fast")
        queue.done("fast")
        queue.add("fast")
        #expect(queue.next(now: 0) == "fast")
    }
}

@Suite struct ProductReconcileTests {
    private func product(build: Int = 1, generation: Int = 1, deleting: Bool = false, paused: Bool = false,
                         pendingCleanup: Bool = false) -> StoredProduct
    {
        let spec = DataProductSpec(from: "orders", sink: .file(FileSinkSpec(path: "p.jsonl", format: .jsonl)))
        return StoredProduct(product: DataProduct(metadata: ObjectMetadata(name: "p"), spec: spec), generation: generation,
                             createdAt: 0, build: build, buildStartedAt: 0, status: ProductStatus(), deleting: deleting,
                             paused: paused, pendingCleanup: pendingCleanup ? spec : nil)
    }

    @Test func aNewProductStartsAndARunningOneIsLeftAlone() {
        #expect(ProductReconcile.steps(desired: product(), observed: .init()) == [.startPipeline])
        #expect(ProductReconcile.steps(desired: product(), observed: .init(runningBuild: 1, observedGeneration: 1)) == [])
        #expect(ProductReconcile.steps(desired: product(generation: 2), observed: .init(runningBuild: 1, observedGeneration: 1))
                == [.reportObservedGeneration])
    }

    @Test func aNewBuildStopsTheOldOneAndCleansUpBeforeItStarts() {
        #expect(ProductReconcile.steps(desired: product(build: 2), observed: .init(runningBuild: 1)) == [.stopPipeline, .startPipeline])
        #expect(ProductReconcile.steps(desired: product(build: 2, pendingCleanup: true), observed: .init(runningBuild: 1))
                == [.stopPipeline, .removePreviousOutput, .startPipeline])
        // After a crash nothing runs: the clean-up is done again, then the build starts.
        #expect(ProductReconcile.steps(desired: product(build: 2, pendingCleanup: true), observed: .init())
                == [.removePreviousOutput, .startPipeline])
    }

    @Test func deletionStopsRemovesTheOutputsThenForgets() {
        #expect(ProductReconcile.steps(desired: product(deleting: true), observed: .init(runningBuild: 1))
                == [.stopPipeline, .removeOutputs, .forget])
        #expect(ProductReconcile.steps(desired: product(deleting: true), observed: .init()) == [.removeOutputs, .forget])
        #expect(ProductReconcile.steps(desired: nil, observed: .init(runningBuild: 1)) == [.stopPipeline])
        #expect(ProductReconcile.steps(desired: nil, observed: .init()) == [])
    }

    @Test func pausingStopsAndReportsOnce() {
        #expect(ProductReconcile.steps(desired: product(paused: true), observed: .init(runningBuild: 1, phase: .live))
                == [.stopPipeline, .reportPaused])
        #expect(ProductReconcile.steps(desired: product(paused: true), observed: .init(phase: .paused)) == [])
    }
}

@Suite struct SecretSealerTests {
    @Test func aSealedSecretOpensOnlyAsItselfWithTheSameKey() throws {
        let path = NSTemporaryDirectory() + "provision-secret-key-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let sealer = try SecretSealer.loadOrCreate(at: path)
        let sealed = try sealer.seal("s3cret", id: "fraud/hook-key")
        #expect(!sealed.contains("s3cret"))
        #expect(try SecretSealer.loadOrCreate(at: path).open(sealed, id: "fraud/hook-key") == "s3cret")
        #expect(throws: SecretCannotBeOpened.self) { try sealer.open(sealed, id: "growth/hook-key") }
        #expect(throws: SecretCannotBeOpened.self) { try SecretSealer.ephemeral().open(sealed, id: "fraud/hook-key") }
        let mode = (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)?.intValue
        #expect(mode == 0o600)
    }
}
