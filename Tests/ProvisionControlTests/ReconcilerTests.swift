import Foundation
import Logging
import Testing
import ProvisionLog
import ProvisionModel
import ProvisionPipeline
@testable import ProvisionControl

private let catalog = """
    apiVersion: provision/v1
    kind: Dataset
    metadata: {name: orders}
    spec:
      key: order_id
      time: placed_at
      schema: {order_id: string, amount: decimal, region: string, placed_at: timestamp}
    """

private func productSpec(where filter: String, path: String = "out/orders.jsonl", policy: String = "Retain", select: String = "{id: order_id, amount: amount}") -> String {
    """
    apiVersion: provision/v1
    kind: DataProduct
    metadata: {name: big-orders, team: risk}
    spec:
      from: orders
      where: \(filter)
      select: \(select)
      sink: {file: {path: \(path)}}
      deletionPolicy: \(policy)
    """
}

/// A store whose disk is full once `failing` is set.
private final class FailingControlStore: ControlStore, @unchecked Sendable {
    private let lock = NSLock()
    private let stored: EmbeddedControlStore
    private var failingNow = false

    init() throws {
        stored = try EmbeddedControlStore(directory: NSTemporaryDirectory() + "provision-store-\(UUID().uuidString)")
    }

    var failing: Bool {
        get { lock.withLock { failingNow } }
        set { lock.withLock { failingNow = newValue } }
    }

    func load() throws -> ControlState { try ControlRecords.state(from: stored.snapshotNow()) }

    func snapshot() async throws -> StoreSnapshot { stored.snapshotNow() }

    func commit(_ writes: [RecordWrite], durable: Bool) async throws -> ResourceVersion {
        if failing { throw CocoaError(.fileWriteOutOfSpace) }
        return try stored.commitNow(writes, durable: durable)
    }

    func watch(from version: ResourceVersion) async throws -> AsyncThrowingStream<StoreEvent, Error> {
        try await stored.watch(from: version)
    }
}

/// A reconciler on a real embedded log and file sinks in a temporary directory.
private struct Harness {
    let directory: String
    let log: EmbeddedEventLog
    let reconciler: Reconciler

    init(directory: String = NSTemporaryDirectory() + "provision-control-\(UUID().uuidString)",
         store: (any ControlStore)? = nil) async throws {
        self.directory = directory
        log = try EmbeddedEventLog(directory: directory + "/log")
        let checkpoints = try FileCheckpointStore(directory: directory + "/checkpoints")
        reconciler = try await Reconciler(
            log: log, store: store ?? EmbeddedControlStore(directory: directory + "/control"),
            sinks: SinkFactory(fileRoot: directory + "/files", checkpoints: checkpoints),
            configuration: .init(backoff: RetryBackoff(initial: .milliseconds(20), cap: .milliseconds(200)),
                                 pipelineLimits: .init(batchRecordsMax: 500, idleWait: .milliseconds(50)),
                                 resyncInterval: .milliseconds(100)),
            logger: Logger(label: "test"))
    }

    func apply(_ documents: String..., dryRun: Bool = false) async throws -> [PlannedChange] {
        try await reconciler.apply(ApplyRequest(files: [SpecFile(name: "test.yaml", content: documents.joined(separator: "\n---\n"))],
                                                dryRun: dryRun), as: .development).changes
    }

    func produce(_ range: Range<Int>) async throws {
        let records = range.map { index -> LogRecord in
            let value = #"{"order_id":"o-\#(index)","amount":\#(index % 100),"region":"EU","placed_at":"\#(Timestamp.format(Int64(index) * 1000))"}"#
            return LogRecord(key: Array("o-\(index)".utf8), value: Array(value.utf8), timestamp: Int64(index) * 1000)
        }
        try await log.append(records, to: TopicPartition(topic: "orders", partition: 0))
    }

    func waitFor(_ name: String = "big-orders", timeout: Duration = .seconds(30),
                 _ condition: @escaping (ProductResource?) -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if condition(await reconciler.product(name, as: .development)) { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("timed out; status: \(String(describing: await reconciler.product(name, as: .development)?.status))")
        throw CancellationError()
    }

    func lines(_ path: String = "out/orders.jsonl") throws -> [String] {
        try String(contentsOfFile: directory + "/files/" + path, encoding: .utf8).split(separator: "\n").map(String.init)
    }
}

@Suite struct ReconcilerTests {
    /// A deletion whose destination cannot be reached (a PostgreSQL server that is not
    /// there) is not forgotten: the product says why and stays `deleting`, and the reconcile
    /// is retried with backoff.
    @Test func anOutputThatCannotBeReachedIsReportedAndRetried() async throws {
        let harness = try await Harness()
        let running = Task { try await harness.reconciler.run() }
        defer { running.cancel() }
        let unreachable = productSpec(where: "amount >= 50", policy: "Delete", select: "{order_id: order_id, amount: amount}")
            .replacingOccurrences(of: "sink: {file: {path: out/orders.jsonl}}", with: "key: order_id\n  sink: {postgres: {url: \"postgres://127.0.0.1:1/none\", table: t}}")
        _ = try await harness.apply(catalog, unreachable)
        #expect(try await harness.reconciler.deleteProduct("big-orders", as: .development) != nil)
        try await harness.waitFor { $0?.status.conditions.contains { $0.type == "Stalled" && $0.reason == "CleanupFailed" } == true }
        let stalled = await harness.reconciler.product("big-orders", as: .development)
        #expect(stalled?.metadata.deleting == true)
        #expect(stalled?.status.conditions.first { $0.type == "Ready" }?.message.contains("cannot remove the output") == true)
    }

    /// An output whose path a link now goes through cannot be removed safely (the file sink
    /// never follows links): it is left where it is, and the deletion finishes — no retry
    /// would change that.
    @Test func anOutputThatCannotBeRemovedSafelyIsLeftAndTheDeletionFinishes() async throws {
        let harness = try await Harness()
        let running = Task { try await harness.reconciler.run() }
        defer { running.cancel() }
        _ = try await harness.apply(catalog, productSpec(where: "amount >= 50", policy: "Delete"))
        try await harness.produce(0..<100)
        try await harness.waitFor { $0?.status.phase == .live && $0?.status.recordsWritten == 50 }
        let files = harness.directory + "/files"
        try FileManager.default.moveItem(atPath: files + "/out", toPath: files + "/out-real")
        try FileManager.default.createSymbolicLink(atPath: files + "/out", withDestinationPath: "out-real")
        #expect(try await harness.reconciler.deleteProduct("big-orders", as: .development) != nil)
        try await harness.waitFor { $0 == nil }
        #expect(FileManager.default.fileExists(atPath: files + "/out-real/orders.jsonl"), "removed through a link")
    }

    @Test func appliesPlansRebuildsAndDeletesByPolicy() async throws {
        let harness = try await Harness()
        let running = Task { try await harness.reconciler.run() }
        defer { running.cancel() }

        let plan = try await harness.apply(catalog, productSpec(where: "amount >= 50"), dryRun: true)
        #expect(plan.map(\.action) == [.create, .create])
        #expect(await harness.reconciler.product("big-orders", as: .development) == nil)  // a dry run changes nothing

        #expect(try await harness.apply(catalog, productSpec(where: "amount >= 50")).map(\.action) == [.create, .create])
        try await harness.produce(0..<1000)
        try await harness.waitFor { $0?.status.phase == .live && $0?.status.recordsWritten == 500 }
        #expect(try harness.lines().count == 500)
        #expect(try await harness.apply(catalog, productSpec(where: "amount >= 50")).map(\.action) == [.unchanged, .unchanged])

        // Changing the filter rebuilds the output from scratch.
        let changes = try await harness.apply(catalog, productSpec(where: "amount >= 90"))
        #expect(changes.map(\.action) == [.unchanged, .updateRebuild])
        try await harness.waitFor { $0?.status.phase == .live && $0?.status.recordsWritten == 100 && $0?.status.observedGeneration == 2 }
        let lines = try harness.lines()
        #expect(lines.count == 100)
        #expect(lines.first == #"{"id":"o-90","amount":90}"#, "an integer in a decimal field keeps its digits")

        // Changing only the deletion policy is an in-place update.
        #expect(try await harness.apply(catalog, productSpec(where: "amount >= 90", policy: "Delete")).map(\.action) == [.unchanged, .update])
        try await harness.waitFor { $0?.status.observedGeneration == 3 }
        #expect(try harness.lines().count == 100)

        #expect(try await harness.reconciler.deleteProduct("big-orders", as: .development) != nil)
        try await harness.waitFor { $0 == nil }
        #expect(!FileManager.default.fileExists(atPath: harness.directory + "/files/out/orders.jsonl"))
    }

    @Test func retainKeepsTheOutputWhenTheProductGoes() async throws {
        let harness = try await Harness()
        let running = Task { try await harness.reconciler.run() }
        defer { running.cancel() }
        _ = try await harness.apply(catalog, productSpec(where: "amount >= 50"))
        try await harness.produce(0..<200)
        try await harness.waitFor { $0?.status.recordsWritten == 100 }
        #expect(try await harness.reconciler.deleteProduct("big-orders", as: .development) != nil)
        try await harness.waitFor { $0 == nil }
        #expect(try harness.lines().count == 100)
    }

    @Test func anInvalidApplyChangesNothing() async throws {
        let harness = try await Harness()
        await #expect(throws: ApplyRejected.self) {
            try await harness.apply(catalog, productSpec(where: "amout > 1"))
        }
        #expect(await harness.reconciler.products(as: .development).isEmpty)
        #expect(try await harness.reconciler.datasets().isEmpty)
    }

    @Test func pauseKeepsTheOutputAndResumeContinuesFromTheCheckpoint() async throws {
        let harness = try await Harness()
        let running = Task { try await harness.reconciler.run() }
        defer { running.cancel() }
        _ = try await harness.apply(catalog, productSpec(where: "amount >= 50"))
        try await harness.produce(0..<200)
        try await harness.waitFor { $0?.status.phase == .live && $0?.status.recordsWritten == 100 }
        #expect(try await harness.reconciler.setPaused("big-orders", true, as: .development) != nil)
        try await harness.waitFor { $0?.status.phase == .paused }
        try await harness.produce(200..<400)
        try await Task.sleep(for: .milliseconds(300))
        #expect(try harness.lines().count == 100)
        #expect(await harness.reconciler.product("big-orders", as: .development)?.status.condition("Ready")?.reason == "Paused")
        #expect(try await harness.reconciler.setPaused("big-orders", false, as: .development) != nil)
        try await harness.waitFor { $0?.status.phase == .live && $0?.status.recordsWritten == 200 }
        let ids = try harness.lines().map { $0.split(separator: "\"")[3] }
        #expect(ids.count == 200 && Set(ids).count == 200)
        #expect(try await harness.reconciler.setPaused("absent", true, as: .development) == nil)
    }

    @Test func aDatasetChangeRebuildsItsProductsOrIsRejectedIfItBreaksThem() async throws {
        let harness = try await Harness()
        let running = Task { try await harness.reconciler.run() }
        defer { running.cancel() }
        _ = try await harness.apply(catalog, productSpec(where: "amount >= 50"))
        try await harness.produce(0..<200)
        try await harness.waitFor { $0?.status.phase == .live && $0?.status.recordsWritten == 100 }

        // Dropping a field the product reads is rejected at the dataset, and nothing changes.
        let breaking = catalog.replacingOccurrences(of: "amount: decimal, ", with: "")
        do {
            _ = try await harness.reconciler.apply(ApplyRequest(files: [SpecFile(name: "catalog.yaml", content: breaking)], dryRun: false), as: .development)
            Issue.record("the apply was accepted")
        } catch let rejected as ApplyRejected {
            #expect(rejected.errors.map(\.description) == [
                "catalog.yaml:1:1: spec: this change to dataset 'orders' breaks product 'big-orders': spec.where: unknown field 'amount' in dataset 'orders'",
            ])
        }
        #expect(try await harness.reconciler.dataset("orders", as: .development)?.spec.schema.field(named: "amount") != nil)

        // A compatible change (a new field) rebuilds the product from scratch.
        let widened = catalog.replacingOccurrences(of: "region: string", with: "region: string, channel: string")
        let changes = try await harness.reconciler.apply(ApplyRequest(files: [SpecFile(name: "catalog.yaml", content: widened)], dryRun: false), as: .development).changes
        #expect(changes.map(\.action) == [.update, .updateRebuild])
        try await harness.waitFor { $0?.status.phase == .live && $0?.status.recordsWritten == 100 && $0?.metadata.generation == 1 }
        #expect(try harness.lines().count == 100)
    }

    @Test func twoProductsCannotShareAnOutput() async throws {
        let harness = try await Harness()
        _ = try await harness.apply(catalog, productSpec(where: "amount >= 50"))
        let second = productSpec(where: "amount >= 10").replacingOccurrences(of: "name: big-orders", with: "name: other-orders")
        do {
            _ = try await harness.apply(second)
            Issue.record("the apply was accepted")
        } catch let rejected as ApplyRejected {
            #expect(rejected.errors.map(\.description) == [
                "test.yaml:1:1: spec.sink: file://\(harness.directory)/files/out/orders.jsonl is already the output of product 'big-orders'",
            ])
        }
        #expect(await harness.reconciler.product("other-orders", as: .development) == nil)
    }

    @Test func aFailingSinkStallsWithTheReasonAndRecoversByItself() async throws {
        let harness = try await Harness()
        // A file where the sink needs a directory: every attempt fails until it is removed.
        try FileManager.default.createDirectory(atPath: harness.directory + "/files", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: harness.directory + "/files/blocked", contents: Data("x".utf8))
        let running = Task { try await harness.reconciler.run() }
        defer { running.cancel() }
        _ = try await harness.apply(catalog, productSpec(where: "amount >= 50", path: "blocked/orders.jsonl"))
        try await harness.produce(0..<100)
        try await harness.waitFor { product in
            product?.status.phase == .failed && product?.status.condition("Stalled")?.reason == "SinkUnavailable"
        }
        try FileManager.default.removeItem(atPath: harness.directory + "/files/blocked")
        try await harness.waitFor { $0?.status.phase == .live && $0?.status.recordsWritten == 50 }
        #expect(await harness.reconciler.product("big-orders", as: .development)?.status.condition("Stalled")?.isTrue == false)
        #expect(try harness.lines("blocked/orders.jsonl").count == 50)
    }

    @Test func specsStatusAndCheckpointsSurviveARestart() async throws {
        let directory = NSTemporaryDirectory() + "provision-control-\(UUID().uuidString)"
        do {
            let harness = try await Harness(directory: directory)
            let running = Task { try await harness.reconciler.run() }
            _ = try await harness.apply(catalog, productSpec(where: "amount >= 50"))
            try await harness.produce(0..<400)
            try await harness.waitFor { $0?.status.phase == .live && $0?.status.recordsWritten == 200 }
            running.cancel()
            try await running.value
        }
        let harness = try await Harness(directory: directory)
        #expect(await harness.reconciler.product("big-orders", as: .development)?.status.recordsWritten == 200)
        let running = Task { try await harness.reconciler.run() }
        defer { running.cancel() }
        try await harness.produce(400..<600)
        try await harness.waitFor { $0?.status.phase == .live && $0?.status.recordsWritten == 300 }
        let ids = try harness.lines().map { $0.split(separator: "\"")[3] }
        #expect(ids.count == 300)
        #expect(Set(ids).count == 300)  // nothing re-sent after the restart
    }

    /// A change that cannot be saved is not made: the request fails, and nothing of it is
    /// visible, now or after a restart.
    @Test func aChangeThatCannotBeSavedFailsTheRequestAndChangesNothing() async throws {
        let store = try FailingControlStore()
        let harness = try await Harness(store: store)
        _ = try await harness.apply(catalog)
        store.failing = true
        await #expect(throws: ControlStateNotSaved.self) {
            _ = try await harness.apply(catalog, productSpec(where: "amount > 10"))
        }
        #expect(await harness.reconciler.products(as: .development).isEmpty)
        #expect(try store.load().products.isEmpty)
        store.failing = false
        _ = try await harness.apply(catalog, productSpec(where: "amount > 10"))
        store.failing = true
        await #expect(throws: ControlStateNotSaved.self) { _ = try await harness.reconciler.setPaused("big-orders", true, as: .development) }
        #expect(await harness.reconciler.currentState.products["big-orders"]?.paused == false)
        await #expect(throws: ControlStateNotSaved.self) { _ = try await harness.reconciler.deleteProduct("big-orders", as: .development) }
        #expect(await harness.reconciler.currentState.products["big-orders"]?.deleting == false)
    }

    /// Retention by age keeps what a product has not read: a product without a checkpoint
    /// holds the whole topic, a caught-up one holds from its position, a paused one keeps
    /// holding it while records arrive.
    @Test func productsHoldTheRecordsTheyHaveNotReadAgainstRetention() async throws {
        let harness = try await Harness()
        let orders = TopicPartition(topic: "orders", partition: 0)
        _ = try await harness.apply(catalog, productSpec(where: "amount > 10"))
        #expect(try await harness.reconciler.unreadOffsets()[orders] == 0)
        try await harness.produce(0..<300)
        let service = Task { try await harness.reconciler.run() }
        defer { service.cancel() }
        try await harness.waitFor { $0?.status.checkpoint["0"] == 300 }
        #expect(try await harness.reconciler.unreadOffsets()[orders] == 300)
        #expect(try await harness.reconciler.setPaused("big-orders", true, as: .development) != nil)
        try await harness.waitFor { $0?.status.phase == .paused }
        try await harness.produce(300..<400)
        #expect(try await harness.reconciler.unreadOffsets()[orders] == 300)
    }

    /// Applies that each create a dataset await its topic; one made meanwhile must not be
    /// overwritten by another's older view of the state.
    @Test func concurrentAppliesLoseNothing() async throws {
        let harness = try await Harness()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for number in 0..<8 {
                group.addTask {
                    let dataset = catalog.replacingOccurrences(of: "name: orders", with: "name: orders-\(number)")
                    _ = try await harness.apply(dataset)
                }
            }
            try await group.waitForAll()
        }
        let names = try await harness.reconciler.datasets().map(\.metadata.name).sorted()
        #expect(names == (0..<8).map { "orders-\($0)" }.sorted())
    }

    /// Deleted while its pipeline runs and applied again at once: the new product stays, with
    /// its own pipeline and a fresh output, and the deletion of the old one finishes.
    @Test func aProductAppliedAgainWhileItsDeletionFinishesStays() async throws {
        let harness = try await Harness()
        let running = Task { try await harness.reconciler.run() }
        defer { running.cancel() }
        _ = try await harness.apply(catalog, productSpec(where: "amount >= 50", policy: "Delete"))
        try await harness.produce(0..<2000)
        try await harness.waitFor { $0?.status.phase == .live && $0?.status.recordsWritten == 1000 }
        #expect(try await harness.reconciler.deleteProduct("big-orders", as: .development) != nil)
        _ = try await harness.apply(catalog, productSpec(where: "amount >= 90", policy: "Delete"))
        try await Task.sleep(for: .milliseconds(500))
        try await harness.waitFor { $0?.status.phase == .live && $0?.status.recordsWritten == 200 }
        #expect(await harness.reconciler.product("big-orders", as: .development)?.spec.filter == "amount >= 90")
        #expect(try harness.lines().count == 200)
    }
}
