import Foundation
import Logging
import ProvisionFailpoints
import ProvisionLog
import ProvisionModel
import ProvisionPipeline
import ServiceLifecycle
import Synchronization

/// Names, from any task: which pipelines have finished during a shutdown.
private final class FinishedRuns: Sendable {
    private let names = Mutex<Set<String>>([])

    func insert(_ name: String) { _ = names.withLock { $0.insert(name) } }
    func contains(_ name: String) -> Bool { names.withLock { $0.contains(name) } }
}

/// Spec errors that stopped an apply; nothing was applied.
public struct ApplyRejected: Error, Sendable {
    public var errors: [SpecError]
    /// True when every error is a change to an object another writer manages (HTTP 409),
    /// not an invalid spec (422).
    public var isOwnershipConflict = false

    public init(errors: [SpecError], isOwnershipConflict: Bool = false) {
        self.errors = errors
        self.isOwnershipConflict = isOwnershipConflict
    }
}

/// Level-triggered reconciliation: a request names a product; the reconciler compares the
/// desired spec with what runs and makes them agree. Specs, status and builds persist in the
/// `ControlStore`; checkpoints persist with the output.
public actor Reconciler: Service {
    public struct Configuration: Sendable {
        public var backoff: RetryBackoff
        public var pipelineLimits: Pipeline.Limits
        /// How often unsaved status is written and every product is checked again.
        public var resyncInterval: Duration
        /// How long a shutdown waits for pipelines to commit the batch in flight before it
        /// abandons them (their batches are read again on restart).
        public var shutdownTimeout: Duration = .seconds(30)

        public init(backoff: RetryBackoff = .init(), pipelineLimits: Pipeline.Limits = .init(), resyncInterval: Duration = .seconds(2)) {
            self.backoff = backoff
            self.pipelineLimits = pipelineLimits
            self.resyncInterval = resyncInterval
        }
    }

    private struct Run {
        var build: Int
        var task: Task<Void, Never>
        var stop: StopRequest
        var lifecycle: ProductLifecycle
        /// The checkpoint of the last report, to tell progress from a pipeline restarting.
        var lastOffsets: [Int: Int64]?
    }

    private let log: any EventLog
    private let store: any ControlStore
    private let sinks: SinkFactory
    /// Plans applies by the sink factory's rules for outputs.
    let planner: ApplyPlanner
    private let configuration: Configuration
    private let logger: Logger
    private let clock: @Sendable () -> TimestampMilliseconds
    private var state: ControlState
    private var runs: [String: Run] = [:]
    private var statusDirty = false
    private let requests: AsyncStream<String>
    private let requestContinuation: AsyncStream<String>.Continuation

    public init(log: any EventLog, store: any ControlStore, sinks: SinkFactory, configuration: Configuration = .init(),
                logger: Logger, clock: @escaping @Sendable () -> TimestampMilliseconds = Reconciler.systemClock) throws
    {
        self.log = log
        self.store = store
        self.sinks = sinks
        planner = ApplyPlanner(rules: OutputRules(location: { sinks.location(of: $0) }, rebuildsInPlace: { sinks.rebuildsInPlace($0) }))
        self.configuration = configuration
        self.logger = logger
        self.clock = clock
        state = try store.load()
        (requests, requestContinuation) = AsyncStream.makeStream(of: String.self)
    }

    public static let systemClock: @Sendable () -> TimestampMilliseconds = { now() }

    /// Wall-clock milliseconds since the epoch.
    public static func now() -> TimestampMilliseconds {
        TimestampMilliseconds((Date().timeIntervalSince1970 * 1000).rounded())
    }

    // MARK: Service

    public func run() async throws {
        for name in state.products.keys.sorted() { requestContinuation.yield(name) }
        let requests = self.requests
        await withDiscardingTaskGroup { group in
            group.addTask {
                for await name in requests { await self.reconcile(name) }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: self.configuration.resyncInterval)
                    await self.resync()
                }
            }
            try? await gracefulShutdown()
            await self.stopAll()
            group.cancelAll()
        }
    }

    private func resync() {
        flushStatus()
        for name in state.products.keys where runs[name] == nil { requestContinuation.yield(name) }
    }

    /// Stops every pipeline: each finishes the batch in flight (its requests to the
    /// destination, its transaction) and commits, then status is saved. A pipeline still
    /// busy after `shutdownTimeout` is cancelled, and named.
    private func stopAll() async {
        requestContinuation.finish()
        let active = runs
        for (_, run) in active { run.stop.request() }
        let finished = FinishedRuns()
        let timeout = configuration.shutdownTimeout
        let logger = self.logger
        let watchdog = Task {
            try? await Task.sleep(for: timeout)
            if Task.isCancelled { return }
            let abandoned = active.keys.filter { !finished.contains($0) }.sorted()
            logger.error("shutdown timeout: abandoning the batches in flight (they are read again on restart)",
                         metadata: ["products": "\(abandoned)", "timeout": "\(timeout)"])
            for name in abandoned { active[name]?.task.cancel() }
        }
        for (name, run) in active {
            await run.task.value
            finished.insert(name)
        }
        watchdog.cancel()
        runs.removeAll()
        flushStatus()
        logger.info("reconciler stopped", metadata: ["products": "\(active.count)"])
    }

    private func flushStatus() {
        guard statusDirty else { return }
        save()
    }

    private func save() {
        do {
            try store.save(state)
            statusDirty = false
        } catch {
            logger.error("cannot save control state", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Access for the API

    var currentState: ControlState { state }
    var currentTime: TimestampMilliseconds { clock() }
    var eventLog: any EventLog { log }

    /// Saves `next` and only then makes it current: when the save fails nothing changes and
    /// the request that asked for it fails.
    func replaceState(_ next: ControlState) throws(ControlStateNotSaved) {
        do {
            try store.save(next)
        } catch {
            logger.error("cannot save control state", metadata: ["error": "\(error)"])
            throw ControlStateNotSaved(cause: "\(error)")
        }
        state = next
        statusDirty = false
    }

    /// Sinks for redeliveries, whose positions in the dead-letter topic are kept apart.
    nonisolated var redeliverySinks: SinkFactory { sinks.keepingCheckpoints(suffix: ".redelivery") }

    /// Stops the product's pipeline, if any, and asks for its reconciliation, which starts
    /// it again from the saved state.
    func restartRun(_ name: String) async {
        if let run = runs.removeValue(forKey: name) {
            run.task.cancel()
            await run.task.value
        }
        requestReconcile(name)
    }

    func requestReconcile(_ name: String) {
        requestContinuation.yield(name)
    }

    func createTopic(_ topic: String) async throws {
        try await log.createTopic(topic, partitions: 1)
    }

    // MARK: Reconcile

    private func reconcile(_ name: String) async {
        guard let stored = state.products[name] else {
            if let run = runs.removeValue(forKey: name) {
                run.task.cancel()
                await run.task.value
            }
            return
        }
        if stored.deleting {
            await finishDeletion(stored)
            return
        }
        if stored.paused {
            if let run = runs.removeValue(forKey: name) {
                run.task.cancel()
                await run.task.value
            }
            if stored.status.phase != .paused {
                let now = clock()
                var lifecycle = ProductLifecycle(now: now, backoff: configuration.backoff)
                lifecycle.pausedByRequest(now: now)
                updateStatus(name) { status in
                    status.phase = lifecycle.phase
                    status.conditions = lifecycle.conditions(now: now)
                    status.observedGeneration = stored.generation
                }
                save()
            }
            return
        }
        if let run = runs[name] {
            if run.build == stored.build {
                if state.products[name]?.status.observedGeneration != stored.generation {
                    state.products[name]?.status.observedGeneration = stored.generation
                    save()
                }
                return
            }
            run.task.cancel()
            await run.task.value
            runs[name] = nil
        }
        if let previous = stored.pendingCleanup {
            await removeOutput(of: previous, product: name, destroyFile: previous.deletionPolicy == .delete
                               || sinks.location(of: previous) == sinks.location(of: stored.product.spec))
            Failpoint.reached(.previousOutputRemoved)
            state.products[name]?.pendingCleanup = nil
            save()
        }
        start(stored)
    }

    /// Destroys an output, or detaches it (it stays, unmaintained).
    private func removeOutput(of spec: DataProductSpec, product: String, destroyFile: Bool) async {
        let sink = sinks.makeSink(for: spec, product: product, outputSchema: Schema(), keyField: spec.key)
        do {
            if destroyFile { try await sink.destroy() } else { try await sink.detach() }
        } catch {
            logger.error("cannot remove output", metadata: ["product": "\(product)", "error": "\(error)"])
        }
        try? sinks.checkpoints.remove(product)
    }

    private func finishDeletion(_ stored: StoredProduct) async {
        let name = stored.product.name
        if let run = runs.removeValue(forKey: name) {
            run.task.cancel()
            await run.task.value
        }
        await removeOutput(of: stored.product.spec, product: name, destroyFile: stored.product.spec.deletionPolicy == .delete)
        if let previous = stored.pendingCleanup, previous.deletionPolicy == .delete {
            await removeOutput(of: previous, product: name, destroyFile: true)
        }
        try? await log.deleteTopic(DeadLetters.topic(for: name))
        // The clean-up awaited: an apply may have created the product again meanwhile (an
        // apply treats a product being deleted as absent). That one stays.
        guard state.products[name]?.deleting == true else {
            logger.info("product re-created while its deletion finished", metadata: ["product": "\(name)"])
            requestReconcile(name)
            return
        }
        state.products[name] = nil
        save()
        logger.info("product deleted", metadata: ["product": "\(name)", "policy": "\(stored.product.spec.deletionPolicy.rawValue)"])
    }

    private func start(_ stored: StoredProduct) {
        let name = stored.product.name
        let now = clock()
        var lifecycle = ProductLifecycle(now: now, backoff: configuration.backoff, failures: stored.status.failures ?? 0)
        lifecycle.provisioningStarted(now: now)
        let datasets = state.datasets.mapValues(\.dataset)
        let plan: ProductPlan
        do {
            plan = try ProductPlan.compile(stored.product, datasets: datasets)
        } catch {
            // The dataset changed under the product: terminal until the spec or dataset is fixed,
            // and said so (no retry would help).
            lifecycle.stoppedForGood(reason: "InvalidSpec",
                                     message: "the product no longer compiles against its dataset: \(error); fix the spec or the dataset",
                                     now: now)
            updateStatus(name) { status in
                status.phase = lifecycle.phase
                status.conditions = lifecycle.conditions(now: now)
            }
            return
        }
        let startTime = stored.product.spec.backfill.startTime(createdAt: stored.buildStartedAt)
        let processor = RecordProcessor(plan: plan, startTime: startTime, endTime: stored.product.spec.backfill.endTime)
        let build = stored.build
        updateStatus(name) { status in
            status.phase = lifecycle.phase
            status.conditions = lifecycle.conditions(now: now)
            status.observedGeneration = stored.generation
            status.backfillStart = startTime.map(Timestamp.format)
            status.output = self.sinks.location(of: stored.product.spec)
            status.deadLetterTopic = DeadLetters.topic(for: name)
        }
        save()
        let sink = sinks.makeSink(for: stored.product.spec, product: name, outputSchema: plan.outputSchema, keyField: plan.keyField,
                                  build: SinkBuild(number: stored.build, kind: stored.buildKind ?? .fresh))
        let stop = StopRequest()
        let pipeline = Pipeline(processor: processor, log: log, sink: sink, limits: configuration.pipelineLimits,
                                logger: logger, clock: clock, acceptsLoss: stored.acceptsLoss == true, stop: stop) { [weak self] progress in
            await self?.pipelineProgressed(name, build: build, progress)
        }
        let task = Task { await self.supervise(pipeline, name: name, build: build) }
        runs[name] = Run(build: build, task: task, stop: stop, lifecycle: lifecycle)
    }

    /// Runs a pipeline until it is cancelled, retrying failures with backoff. Each retry
    /// reopens the sink, which resumes from the committed checkpoint.
    private nonisolated func supervise(_ pipeline: Pipeline, name: String, build: Int) async {
        while !Task.isCancelled && !pipeline.stop.isRequested {
            do {
                try await pipeline.run()
                if Task.isCancelled || pipeline.stop.isRequested { return }
            } catch {
                if Task.isCancelled { return }
                guard let delay = await pipelineFailed(name, build: build, error) else { return }
                try? await Task.sleep(for: delay)
            }
        }
    }

    private func updateStatus(_ name: String, _ change: (inout ProductStatus) -> Void) {
        guard var stored = state.products[name] else { return }
        change(&stored.status)
        state.products[name] = stored
        statusDirty = true
    }

    private func pipelineProgressed(_ name: String, build: Int, _ progress: PipelineProgress) {
        guard var run = runs[name], run.build == build else { return }
        let now = clock()
        let previousPhase = run.lifecycle.phase
        let advanced = run.lastOffsets.map { $0 != progress.checkpoint.offsets } ?? false
        run.lastOffsets = progress.checkpoint.offsets
        run.lifecycle.progressed(caughtUp: progress.caughtUp, advanced: advanced, now: now)
        runs[name] = run
        let lifecycle = run.lifecycle
        updateStatus(name) { status in
            status.phase = lifecycle.phase
            status.conditions = lifecycle.conditions(now: now)
            status.lag = progress.lag
            status.recordsWritten = progress.checkpoint.recordsWritten
            status.lateRecords = progress.checkpoint.joins?.late
            status.deadLettered = progress.checkpoint.deadLettered
            status.checkpoint = Dictionary(uniqueKeysWithValues: progress.checkpoint.offsets.map { (String($0.key), $0.value) })
            if progress.recordsLost > 0 { status.recordsLostToRetention = (status.recordsLostToRetention ?? 0) + progress.recordsLost }
            status.failures = lifecycle.failures > 0 ? lifecycle.failures : nil
        }
        if state.products[name]?.acceptsLoss == true {
            // This run started past the lost records (or found none): the acceptance is used.
            state.products[name]?.acceptsLoss = nil
            save()
        }
        if previousPhase != lifecycle.phase {
            logger.info("product phase", metadata: ["product": "\(name)", "phase": "\(lifecycle.phase.rawValue)"])
            save()
        }
    }

    /// Records the failure; returns how long to wait before the next attempt, or nil when
    /// there is to be none (the product waits for a person).
    private func pipelineFailed(_ name: String, build: Int, _ error: Error) -> Duration? {
        let now = clock()
        let lost = error as? RecordsLostToRetention
        let reason = lost != nil ? "RecordsLostToRetention" : (error as? SinkError)?.reason ?? "PipelineFailed"
        guard var run = runs[name], run.build == build else { return lost != nil ? nil : configuration.backoff.cap }
        var action = ProductLifecycle.Action.none
        if let lost {
            run.lifecycle.stoppedForGood(reason: reason, message: lost.description, now: now)
        } else {
            action = run.lifecycle.failed(reason: reason, message: "\(error)", now: now, unitRandom: Double.random(in: 0..<1))
        }
        runs[name] = run
        let lifecycle = run.lifecycle
        updateStatus(name) { status in
            status.phase = lifecycle.phase
            status.conditions = lifecycle.conditions(now: now)
            status.failures = lifecycle.failures > 0 ? lifecycle.failures : nil
        }
        save()
        if let lost {
            logger.error("records lost to retention", metadata: ["product": "\(name)", "lost": "\(lost.count)"])
            return nil
        }
        logger.warning("pipeline failed", metadata: ["product": "\(name)", "reason": "\(reason)", "error": "\(error)",
                                                     "attempt": "\(lifecycle.failures)"])
        if case .retry(let delay) = action { return delay }
        return configuration.backoff.cap
    }
}
