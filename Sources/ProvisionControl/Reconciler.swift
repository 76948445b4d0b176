import Foundation
import Logging
import Metrics
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
    /// True when every error is a change to an object another writer manages, or one that
    /// changed since the version the document names (HTTP 409), not an invalid spec (422).
    public var isConflict = false
    /// True when the documents name another team than the caller's (HTTP 403).
    public var isForbidden = false

    public init(errors: [SpecError], isConflict: Bool = false, isForbidden: Bool = false) {
        self.errors = errors
        self.isConflict = isConflict
        self.isForbidden = isForbidden
    }
}

/// The caller's token does not allow the request (HTTP 403). A product of another team is
/// not refused this way but not found, so that its name does not leak.
public struct AccessDenied: Error, Sendable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }

    public static func needsEditor(_ caller: Caller, to action: String) -> AccessDenied {
        AccessDenied("token '\(caller.token)' is a \(caller.role.rawValue) of team '\(caller.team)'; \(action) needs an editor token")
    }
}

/// Level-triggered reconciliation: a change names a product; workers take names from a
/// deduplicating work queue, compare the desired spec with what runs and make them agree
/// (`ProductReconcile` says how). Specs and status are records in the `ControlStore`, the
/// reconciler's state is its cache of them; checkpoints persist with the output.
public actor Reconciler: Service {
    public struct Configuration: Sendable {
        public var backoff: RetryBackoff
        public var pipelineLimits: Pipeline.Limits
        /// How often changed status is written and every product is checked again.
        public var resyncInterval: Duration
        /// How long a shutdown waits for pipelines to commit the batch in flight before it
        /// abandons them (their batches are read again on restart).
        public var shutdownTimeout: Duration = .seconds(30)
        /// How many products are reconciled at once: a sink slow to clean up holds one.
        public var workers = 8
        /// The backoff of a reconcile that failed (an output that could not be removed).
        public var reconcileBackoff = RetryBackoff(initial: .milliseconds(200), cap: .seconds(60))

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
        var newestEventTime: TimestampMilliseconds?
    }

    private let log: any EventLog
    let store: any ControlStore
    let sinks: SinkFactory
    let secretSealer: SecretSealer
    /// Plans applies by the sink factory's rules for outputs.
    let planner: ApplyPlanner
    private let configuration: Configuration
    let logger: Logger
    let clock: @Sendable () -> TimestampMilliseconds
    /// The store's records as objects: what every read answers from.
    private var state: ControlState
    private var runs: [String: Run] = [:]
    /// Products whose status changed since it was last written.
    private var unsavedStatus: Set<String> = []
    private let queue: ReconcileQueue
    private var shuttingDown = false
    /// Commits are made one at a time, each against the state the previous one left, so a
    /// plan never overwrites a change committed while it was being made.
    private var committing = false
    private var commitWaiters: [CheckedContinuation<Void, Never>] = []
    /// The version of the last commit this state includes: a list answered from the state
    /// and a watch from this version miss nothing between them.
    private(set) var committedVersion: ResourceVersion = 0
    /// The tokens as authentication reads them, off the actor.
    let tokenIndex = TokenIndex()
    /// Per product, the reasons its sink failed for, so that its error series go with it.
    private var sinkErrorReasons: [String: Set<String>] = [:]
    /// Signalled when git sources change (and once at start): what the GitOps service follows.
    public nonisolated let gitSourceSignals: AsyncStream<Void>
    let gitSourceChanges: AsyncStream<Void>.Continuation


    /// - Parameter secretSealer: seals and opens team secrets; a server passes the one of its
    ///   data directory's key, or the secrets it keeps do not open after a restart.
    public init(log: any EventLog, store: any ControlStore, sinks: SinkFactory, configuration: Configuration = .init(),
                secretSealer: SecretSealer = .ephemeral(),
                logger: Logger, clock: @escaping @Sendable () -> TimestampMilliseconds = Reconciler.systemClock) async throws
    {
        self.log = log
        self.store = store
        self.sinks = sinks
        self.secretSealer = secretSealer
        planner = ApplyPlanner(rules: OutputRules(location: { sinks.location(of: $0) }, rebuildsInPlace: { sinks.rebuildsInPlace($0) }))
        self.configuration = configuration
        self.logger = logger
        self.clock = clock
        let snapshot = try await store.snapshot()
        state = try ControlRecords.state(from: snapshot)
        committedVersion = snapshot.resourceVersion
        tokenIndex.replace(with: state.tokens.values)
        (gitSourceSignals, gitSourceChanges) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        gitSourceChanges.yield()
        queue = ReconcileQueue(backoff: configuration.reconcileBackoff, clock: clock)
    }

    /// Opens the embedded store in `directory`, first moving into it the `state.json` an
    /// earlier version kept there.
    public static func openEmbeddedStore(directory: String, logger: Logger) throws -> EmbeddedControlStore {
        let store = try EmbeddedControlStore(directory: directory)
        if try ControlRecords.migrateLegacyState(at: "\(directory)/state.json", into: store) {
            logger.notice("control state migrated to one record per object", metadata: ["from": "\(directory)/state.json",
                                                                                         "to": "\(store.path)"])
        }
        return store
    }

    public static let systemClock: @Sendable () -> TimestampMilliseconds = { now() }

    /// Wall-clock milliseconds since the epoch.
    public static func now() -> TimestampMilliseconds {
        TimestampMilliseconds((Date().timeIntervalSince1970 * 1000).rounded())
    }

    // MARK: Service

    /// True while the reconciler runs: the store is open and changes are being reconciled.
    public private(set) var isRunning = false

    public func run() async throws {
        for name in state.products.keys.sorted() { queue.add(name) }
        isRunning = true
        await withDiscardingTaskGroup { group in
            for _ in 0..<max(1, configuration.workers) {
                group.addTask { await self.work() }
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

    /// One worker: reconciles the names the queue hands out until it is finished.
    private nonisolated func work() async {
        let duration = Metrics.Timer(label: "provision_reconcile_duration_seconds", preferredDisplayUnit: .seconds)
        while let name = await queue.next() {
            let started = ContinuousClock.now
            let outcome = await reconcile(name)
            duration.record(duration: ContinuousClock.now - started)
            switch outcome {
            case .done, .terminal:
                queue.forget(name)
            case .retryWithBackoff(let reason):
                let delay = queue.failed(name)
                logger.warning("reconcile failed; retrying", metadata: ["product": "\(name)", "reason": "\(reason)", "in": "\(delay)"])
            case .requeue(let delay):
                queue.add(name, after: delay)
            }
            queue.done(name)
        }
    }

    /// Level-triggered safety net: every product without a pipeline is looked at again,
    /// except one waiting out a backoff (its retry is already queued).
    private func resync() async {
        await flushStatus()
        for name in state.products.keys where runs[name] == nil && !queue.isBackingOff(name) { queue.add(name) }
    }

    /// Stops every pipeline: each finishes the batch in flight (its requests to the
    /// destination, its transaction) and commits, then status is saved. A pipeline still
    /// busy after `shutdownTimeout` is cancelled, and named.
    private func stopAll() async {
        shuttingDown = true
        isRunning = false
        queue.finish()
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
        await flushStatus()
        logger.info("reconciler stopped", metadata: ["products": "\(active.count)"])
    }

    // MARK: Commits

    private func lockCommits() async {
        if !committing {
            committing = true
            return
        }
        await withCheckedContinuation { commitWaiters.append($0) }
    }

    private func unlockCommits() {
        if commitWaiters.isEmpty {
            committing = false
        } else {
            commitWaiters.removeFirst().resume()  // the lock passes straight to the next
        }
    }

    /// Commits what `change` makes of the state: the named objects, each a compare-and-swap
    /// on the version this state read. `change` runs once the commits before it are done and
    /// is handed the state they left. It may throw to commit nothing; its result is returned.
    /// Nothing changes here when the store does not take the commit.
    func commit<Result: Sendable>(
        durable: Bool = true,
        _ change: (_ current: ControlState) throws -> (next: ControlState, datasets: [String], products: [String], result: Result)
    ) async throws -> Result {
        try await commitVersioned(durable: durable, change).result
    }

    /// `commit`, also returning the version the commit took (nil when there was nothing to write).
    func commitVersioned<Result: Sendable>(
        durable: Bool = true,
        _ change: (_ current: ControlState) throws -> (next: ControlState, datasets: [String], products: [String], result: Result)
    ) async throws -> (result: Result, version: ResourceVersion?) {
        await lockCommits()
        defer { unlockCommits() }
        let current = state
        let (next, datasets, products, result) = try change(current)
        // Tokens, secrets and git sources are few: every one is compared, so a change needs not name them.
        let writes = ControlRecords.writes(from: current, to: next, datasets: datasets, products: products,
                                           tokens: Set(current.tokens.keys).union(next.tokens.keys),
                                           secrets: Set(current.secrets.keys).union(next.secrets.keys),
                                           gitSources: Set(current.gitSources.keys).union(next.gitSources.keys))
        guard !writes.isEmpty else { return (result, nil) }
        let version: ResourceVersion
        do {
            version = try await store.commit(writes, durable: durable)
        } catch let conflict as StoreConflict {
            // Another server changed a record this one has not seen yet.
            logger.warning("control store conflict", metadata: ["conflict": "\(conflict)"])
            throw conflict
        } catch {
            logger.error("cannot save control state", metadata: ["error": "\(error)"])
            throw ControlStateNotSaved(cause: "\(error)")
        }
        ControlRecords.applyCommitted(writes, from: next, version: version, to: &state)
        if writes.contains(where: { $0.key.kind == .token }) { tokenIndex.replace(with: state.tokens.values) }
        if writes.contains(where: { $0.key.kind == .gitSource }) { gitSourceChanges.yield() }
        committedVersion = max(committedVersion, version)
        // Status written here is saved (unless it changed again while the commit ran).
        for write in writes where write.key.kind == .productStatus {
            if state.products[write.key.name]?.status == next.products[write.key.name]?.status {
                unsavedStatus.remove(write.key.name)
            }
        }
        return (result, version)
    }

    /// Commits a change to one product's spec record (nothing when it is gone).
    private func commitProduct(_ name: String, _ change: @escaping (inout StoredProduct) -> Void) async throws {
        try await commit { current in
            var next = current
            if var stored = next.products[name] {
                change(&stored)
                next.products[name] = stored
            }
            return (next, [], [name], ())
        }
    }

    /// Writes every status that changed since it was last written, in one commit: a status
    /// update is one small record, whatever the number of products.
    func flushStatus(durable: Bool = true) async {
        guard !unsavedStatus.isEmpty else { return }
        await lockCommits()
        defer { unlockCommits() }
        let names = unsavedStatus.filter { state.products[$0] != nil }.sorted()
        // Taken now: a status that changes while the commit runs is marked again.
        unsavedStatus.removeAll()
        let writes = names.map {
            RecordWrite(key: .productStatus($0), value: ControlRecords.encode(state.products[$0]!.status), precondition: .none)
        }
        guard !writes.isEmpty else { return }
        do {
            committedVersion = max(committedVersion, try await store.commit(writes, durable: durable))
        } catch {
            unsavedStatus.formUnion(names)
            logger.error("cannot save status", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Access for the API

    var currentState: ControlState { state }
    var currentTime: TimestampMilliseconds { clock() }
    nonisolated var eventLog: any EventLog { log }

    /// Sinks for redeliveries, whose positions in the dead-letter topic are kept apart.
    nonisolated var redeliverySinks: SinkFactory { sinks.keepingCheckpoints(suffix: ".redelivery") }

    /// Stops the product's pipeline, if any, and asks for its reconciliation, which starts
    /// it again from the saved state.
    func restartRun(_ name: String) async {
        await stopRun(name)
        requestReconcile(name)
    }

    nonisolated func requestReconcile(_ name: String) {
        queue.add(name)
    }

    func createTopic(for dataset: DatasetSpec) async throws {
        try await log.createTopic(for: dataset)
    }

    // MARK: Reconcile

    private func stopRun(_ name: String) async {
        guard let run = runs.removeValue(forKey: name) else { return }
        run.task.cancel()
        await run.task.value
    }

    private func reconcile(_ name: String) async -> ProductReconcile.Outcome {
        if shuttingDown { return .done }
        let desired = state.products[name]
        let observed = ProductReconcile.Observed(runningBuild: runs[name]?.build, phase: desired?.status.phase,
                                                 observedGeneration: desired?.status.observedGeneration)
        for step in ProductReconcile.steps(desired: desired, observed: observed) {
            // Each step reads the state again: an earlier one may have waited on a sink while
            // an apply changed the product (which queued it again).
            switch step {
            case .stopPipeline:
                await stopRun(name)
            case .removePreviousOutput:
                guard let stored = state.products[name], let previous = stored.pendingCleanup else { continue }
                do {
                    try await removeOutput(of: previous, product: name, destroyFile: previous.deletionPolicy == .delete
                                           || sinks.location(of: previous) == sinks.location(of: stored.product.spec))
                } catch {
                    return cleanupFailed(name, error)
                }
                Failpoint.reached(.previousOutputRemoved)
                do {
                    try await commitProduct(name) { if $0.pendingCleanup == previous { $0.pendingCleanup = nil } }
                } catch {
                    return .retryWithBackoff(reason: "\(error)")
                }
            case .removeOutputs:
                guard let stored = state.products[name], stored.deleting else { continue }
                do {
                    try await removeOutput(of: stored.product.spec, product: name,
                                           destroyFile: stored.product.spec.deletionPolicy == .delete)
                    if let previous = stored.pendingCleanup, previous.deletionPolicy == .delete {
                        try await removeOutput(of: previous, product: name, destroyFile: true)
                    }
                    try await log.deleteTopic(DeadLetters.topic(for: name))
                } catch {
                    return cleanupFailed(name, error)
                }
            case .forget:
                let sinkKind = state.products[name]?.product.spec.sink.kind ?? ""
                do {
                    let forgotten = try await commit { current in
                        // The clean-up awaited: an apply may have created the product again
                        // meanwhile (an apply treats a product being deleted as absent). That one stays.
                        guard current.products[name]?.deleting == true else { return (current, [], [], false) }
                        var next = current
                        next.products[name] = nil
                        return (next, [], [name], true)
                    }
                    if forgotten {
                        unsavedStatus.remove(name)
                        forgetMetrics(of: name, sink: sinkKind)
                        logger.info("product deleted", metadata: ["product": "\(name)"])
                    } else {
                        logger.info("product re-created while its deletion finished", metadata: ["product": "\(name)"])
                        requestReconcile(name)
                    }
                } catch {
                    return .retryWithBackoff(reason: "\(error)")
                }
            case .reportPaused:
                let now = clock()
                var lifecycle = ProductLifecycle(now: now, backoff: configuration.backoff)
                lifecycle.pausedByRequest(now: now)
                let generation = desired?.generation ?? 0
                updateStatus(name) { status in
                    status.phase = lifecycle.phase
                    status.conditions = lifecycle.conditions(now: now)
                    status.observedGeneration = generation
                }
            case .reportObservedGeneration:
                let generation = desired?.generation ?? 0
                updateStatus(name) { $0.observedGeneration = generation }
            case .startPipeline:
                guard !shuttingDown, let stored = state.products[name], !stored.deleting, !stored.paused else { continue }
                if let reason = start(stored) { return .terminal(reason: reason) }
            }
        }
        return .done
    }

    /// An output could not be removed (its server is down, say): the product says so and the
    /// reconcile is retried with backoff; nothing moves on until it is gone.
    private func cleanupFailed(_ name: String, _ error: Error) -> ProductReconcile.Outcome {
        let now = clock()
        let message = "cannot remove the output: \(error); retrying"
        updateStatus(name) { status in
            let time = Timestamp.format(now)
            status.conditions = [
                Condition(type: "Ready", status: false, reason: "CleanupFailed", message: message, lastTransitionTime: time),
                Condition(type: "Reconciling", status: true, reason: "RetryingWithBackoff", message: message, lastTransitionTime: time),
                Condition(type: "Stalled", status: true, reason: "CleanupFailed", message: message, lastTransitionTime: time),
            ]
        }
        return .retryWithBackoff(reason: message)
    }

    /// Removes a deleted product's series: the product name is the one label that grows.
    private func forgetMetrics(of name: String, sink: String) {
        Metrics.Timer(label: "provision_sink_write_duration_seconds", dimensions: [("product", name), ("sink", sink)],
                      preferredDisplayUnit: .seconds).destroy()
        for reason in sinkErrorReasons.removeValue(forKey: name) ?? [] {
            Counter(label: "provision_sink_errors_total", dimensions: [("product", name), ("reason", reason)]).destroy()
        }
    }

    /// Destroys an output, or detaches it (it stays, unmaintained), and forgets its checkpoint.
    /// Throws when the destination cannot be reached (retried); an output that cannot be
    /// removed safely — its path goes through a link — is left, and said so, since no retry
    /// would change that.
    private func removeOutput(of spec: DataProductSpec, product: String, destroyFile: Bool) async throws {
        let sink = sinks.makeSink(for: spec, product: product, outputSchema: Schema(), keyField: spec.key,
                                  secrets: secretValues(of: state.products[product]?.product.metadata.team))
        do {
            if destroyFile { try await sink.destroy() } else { try await sink.detach() }
        } catch let error as SinkError where error.reason == "InvalidOutputPath" {
            logger.warning("output left in place: it cannot be removed safely", metadata: ["product": "\(product)", "error": "\(error)"])
        }
        try? await sinks.checkpoints.remove(product)
    }

    /// Starts the product's pipeline; returns why not when the spec cannot run (terminal).
    private func start(_ stored: StoredProduct) -> String? {
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
            return "InvalidSpec"
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
        let sink = sinks.makeSink(for: stored.product.spec, product: name, outputSchema: plan.outputSchema, keyField: plan.keyField,
                                  build: SinkBuild(number: stored.build, kind: stored.buildKind ?? .fresh),
                                  secrets: secretValues(of: stored.product.metadata.team))
        let stop = StopRequest()
        let writeDuration = Metrics.Timer(label: "provision_sink_write_duration_seconds",
                                          dimensions: [("product", name), ("sink", stored.product.spec.sink.kind)],
                                          preferredDisplayUnit: .seconds)
        let observer = PipelineObserver { duration in writeDuration.record(duration: duration) }
        let pipeline = Pipeline(processor: processor, log: log, sink: sink, limits: configuration.pipelineLimits,
                                logger: logger, clock: clock, acceptsLoss: stored.acceptsLoss == true, stop: stop,
                                observer: observer) { [weak self] progress in
            await self?.pipelineProgressed(name, build: build, progress)
        }
        let task = Task { await self.supervise(pipeline, name: name, build: build) }
        runs[name] = Run(build: build, task: task, stop: stop, lifecycle: lifecycle)
        return nil
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

    /// Changes a product's status in memory; it is written with the next flush, and only if
    /// it changed (an idle product reporting the same position writes nothing).
    private func updateStatus(_ name: String, _ change: (inout ProductStatus) -> Void) {
        guard var status = state.products[name]?.status else { return }
        let before = status
        change(&status)
        guard status != before else { return }
        state.products[name]?.status = status
        unsavedStatus.insert(name)
    }

    private func pipelineProgressed(_ name: String, build: Int, _ progress: PipelineProgress) async {
        guard var run = runs[name], run.build == build else { return }
        let now = clock()
        let previousPhase = run.lifecycle.phase
        let advanced = run.lastOffsets.map { $0 != progress.checkpoint.offsets } ?? false
        run.lastOffsets = progress.checkpoint.offsets
        let previousLifecycle = run.lifecycle
        run.lifecycle.progressed(caughtUp: progress.caughtUp, advanced: advanced, now: now)
        // Formatted only when it moved: an idle product reports the same one every second.
        let newestMoved = run.newestEventTime != progress.checkpoint.newestEventTime
        run.newestEventTime = progress.checkpoint.newestEventTime
        runs[name] = run
        let lifecycle = run.lifecycle
        // Conditions are built only on a transition: an idle product reports every second.
        let transitioned = lifecycle != previousLifecycle
        updateStatus(name) { status in
            if transitioned || status.conditions.isEmpty {
                status.phase = lifecycle.phase
                status.conditions = lifecycle.conditions(now: now)
            }
            status.lag = progress.lag
            status.recordsWritten = progress.checkpoint.recordsWritten
            status.recordsRead = progress.checkpoint.recordsRead
            if newestMoved || status.newestDeliveredTime == nil {
                status.newestDeliveredTime = progress.checkpoint.newestEventTime.map(Timestamp.format)
            }
            status.lateRecords = progress.checkpoint.joins?.late
            status.deadLettered = progress.checkpoint.deadLettered
            status.checkpoint = Dictionary(uniqueKeysWithValues: progress.checkpoint.offsets.map { (String($0.key), $0.value) })
            if progress.recordsLost > 0 { status.recordsLostToRetention = (status.recordsLostToRetention ?? 0) + progress.recordsLost }
            status.failures = lifecycle.failures > 0 ? lifecycle.failures : nil
        }
        if previousPhase != lifecycle.phase {
            logger.info("product phase", metadata: ["product": "\(name)", "phase": "\(lifecycle.phase.rawValue)"])
        }
        if state.products[name]?.acceptsLoss == true {
            // This run started past the lost records (or found none): the acceptance is used.
            try? await commitProduct(name) { $0.acceptsLoss = nil }
        }
    }

    /// Records the failure; returns how long to wait before the next attempt, or nil when
    /// there is to be none (the product waits for a person).
    private func pipelineFailed(_ name: String, build: Int, _ error: Error) async -> Duration? {
        let now = clock()
        let lost = error as? RecordsLostToRetention
        let reason = lost != nil ? "RecordsLostToRetention"
            : (error as? EventLogError)?.code == .unavailable ? "SourceUnavailable"
            : (error as? SinkError)?.reason ?? "PipelineFailed"
        sinkErrorReasons[name, default: []].insert(reason)
        Counter(label: "provision_sink_errors_total", dimensions: [("product", name), ("reason", reason)]).increment()
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
        // Saved now, so that a restart keeps the count and does not retry at the fastest rate.
        await flushStatus()
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
