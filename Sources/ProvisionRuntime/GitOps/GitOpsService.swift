import Foundation
import Logging
import ProvisionControl
import ProvisionModel
import ProvisionPipeline
import ServiceLifecycle

/// Follows every git source the control plane keeps: one sync loop per source, started when
/// the source is applied, started again when its spec changes, stopped when it is deleted.
public actor GitOpsService: Service, GitSources {
    private let reconciler: Reconciler
    private let dataDirectory: String
    private let logger: Logger
    /// `serve --gitops`: a source applied at start, as `serve`.
    private let shorthand: GitSource?
    private var syncs: [String: (generation: Int, sync: GitSourceSync, task: Task<Void, Never>)] = [:]

    public init(reconciler: Reconciler, dataDirectory: String, shorthand: GitSource? = nil, logger: Logger) {
        self.reconciler = reconciler
        self.dataDirectory = dataDirectory
        self.shorthand = shorthand
        self.logger = logger
    }

    public func run() async throws {
        if let shorthand { await applyShorthand(shorthand) }
        // The signals end only with the reconciler; a shutdown cancels the wait for the next.
        await cancelWhenGracefulShutdown {
            for await _ in self.reconciler.gitSourceSignals { await self.follow() }
        }
        for (_, running) in syncs { running.task.cancel() }
        for (_, running) in syncs { await running.task.value }
        syncs = [:]
    }

    /// Applies `serve --gitops`'s source like any spec, so that it is listed, suspended and
    /// approved like the others (and a change to it through the API lasts until the next start).
    private func applyShorthand(_ source: GitSource) async {
        let document = GitSourceDocument.yaml(source)
        do {
            _ = try await reconciler.apply(ApplyRequest(files: [SpecFile(name: "serve --gitops", content: document)], dryRun: false,
                                                        force: true, managedBy: "serve"),
                                           as: Caller(token: "serve", team: "admin", role: .admin))
        } catch {
            logger.error("the --gitops source cannot be applied", metadata: ["error": "\(error)"])
        }
    }

    /// Makes the running syncs those of the stored sources.
    private func follow() async {
        let stored = await reconciler.storedGitSources()
        for (name, running) in syncs where stored[name] == nil {
            running.task.cancel()
            syncs[name] = nil
            await running.task.value
            try? FileManager.default.removeItem(atPath: GitSourceSync.mirrorDirectory(of: name, in: dataDirectory))
            logger.info("git source deleted; its products keep running", metadata: ["source": "\(name)"])
        }
        for (name, source) in stored.sorted(by: { $0.key < $1.key }) {
            if let running = syncs[name] {
                if running.generation == source.generation {
                    // Suspended, resumed or approved: the sync sees it now.
                    await running.sync.update(source)
                    continue
                }
                running.task.cancel()
                await running.task.value
            }
            let sync = GitSourceSync(stored: source, dataDirectory: dataDirectory, reconciler: reconciler, logger: logger)
            syncs[name] = (source.generation, sync, Task { await sync.run() })
        }
    }

    // MARK: GitSources

    public func statuses(of sources: [GitSourceStatus]) async -> [GitSourceStatus] {
        var result: [GitSourceStatus] = []
        for base in sources {
            guard let running = syncs[base.name] else {
                result.append(base)
                continue
            }
            var status = await running.sync.currentStatus
            status.suspended = base.suspended
            status.approvedCommit = base.approvedCommit
            result.append(status)
        }
        return result
    }

    public func requestSync(_ name: String) async -> Bool {
        guard let running = syncs[name] else { return false }
        await running.sync.wakeUp()
        return true
    }
}

/// One source's syncs: every interval (or at once, when a push hook or an operator asks),
/// fetch, resolve the ref, read every spec under the path, validate and plan the whole
/// revision as `gitops:<name>` with pruning, decide (`GitSyncPolicy`), apply. Its products
/// keep running whatever happens to the repository.
actor GitSourceSync {
    private var stored: StoredGitSource
    private var repository: GitRepository
    private let reconciler: Reconciler
    private let logger: Logger
    private var status: GitSourceStatus
    private var failures = 0
    private let backoff = RetryBackoff(initial: .seconds(1), cap: .seconds(300))
    /// The wait between syncs, cancelled by a push hook, an approval or a resume.
    private var sleeping: Task<Void, Never>?
    /// A sync was asked for while one ran: the next starts at once.
    private var wakeRequested = false

    static func mirrorDirectory(of name: String, in dataDirectory: String) -> String { "\(dataDirectory)/gitops/\(name).git" }

    init(stored: StoredGitSource, dataDirectory: String, reconciler: Reconciler, logger: Logger) {
        self.stored = stored
        repository = GitRepository(directory: Self.mirrorDirectory(of: stored.source.name, in: dataDirectory), url: stored.source.spec.url)
        self.reconciler = reconciler
        var logger = logger
        logger[metadataKey: "source"] = "\(stored.source.name)"
        self.logger = logger
        status = GitSourceStatus(source: stored.source, suspended: stored.suspended, approvedCommit: stored.approvedCommit,
                                 appliedCommit: stored.appliedCommit)
    }

    private var source: GitSource { stored.source }
    private var interval: Duration { .milliseconds(source.spec.intervalMilliseconds) }

    var currentStatus: GitSourceStatus { status }

    func update(_ stored: StoredGitSource) {
        let changed = stored.suspended != self.stored.suspended || stored.approvedCommit != self.stored.approvedCommit
        self.stored = stored
        if changed { wakeUp() }
    }

    func wakeUp() {
        wakeRequested = true
        sleeping?.cancel()
    }

    func run() async {
        while !Task.isCancelled {
            let delay: Duration
            if stored.suspended {
                setConditions(ready: false, reason: "Suspended", message: "no sync runs until it is resumed (provisionctl gitops resume \(source.name)); the products keep running",
                              at: Timestamp.format(Reconciler.systemClock()))
                delay = .seconds(3600)
            } else {
                delay = await syncOnce()
            }
            if wakeRequested {
                wakeRequested = false
                continue
            }
            // The interval, or a wake-up (which cancels the sleep), whichever comes first; a
            // cancellation (shutdown, a changed spec) ends the wait too.
            let sleep = Task<Void, Never> { try? await Task.sleep(for: delay) }
            sleeping = sleep
            await withTaskCancellationHandler { await sleep.value } onCancel: { sleep.cancel() }
            sleeping = nil
            wakeRequested = false
        }
    }

    /// One sync; returns how long to wait before the next.
    func syncOnce() async -> Duration {
        let now = Timestamp.format(Reconciler.systemClock())
        let commit: String
        let files: [SpecFile]?
        do {
            repository.credentials = await reconciler.gitCredentials(of: source)
            try await repository.fetch()
            commit = try await repository.resolve(source.spec.ref)
            files = try await repository.specFiles(at: commit, under: source.spec.path)
        } catch {
            failures += 1
            let delay = backoff.delay(attempt: failures, unitRandom: Double.random(in: 0..<1))
            setConditions(ready: false, reason: "FetchFailed", message: "\(error); retrying in \(delay); the products keep running", at: now)
            logger.warning("git source cannot be fetched", metadata: ["error": "\(error)"])
            return delay
        }
        failures = 0
        status.lastFetchedCommit = commit
        status.lastFetchedAt = now
        var errors: [SpecError] = []
        var planned = GitRevisionPlan(changes: [], conflicts: [], drift: [], keptFromPrune: [], owned: [])
        do {
            planned = try await reconciler.applyRevision(of: source, files: files ?? [], dryRun: true)
        } catch let rejected as ApplyRejected {
            errors = rejected.errors
        } catch {
            errors = [SpecError(file: "-", line: 1, column: 1, path: "", message: "\(error)")]
        }
        let policy = GitSyncPolicy(pruneFractionMax: Double(source.spec.pruneLimitPercent) / 100)
        let decision = policy.decide(commit: commit, specFiles: files?.count, errors: errors, changes: planned.changes, owned: planned.owned,
                                     approved: stored.approvedCommit)
        status.errors = nil
        status.wouldDelete = nil
        switch decision {
        case .rejected(let errors):
            status.errors = errors
            let stays = status.lastAppliedCommit.map { "commit \($0) stays applied" } ?? "nothing of it is applied"
            setConditions(ready: false, reason: "InvalidRevision",
                          message: "commit \(commit) is not applied (\(errors.count) error\(errors.count == 1 ? "" : "s"), first: \(errors[0])); \(stays)",
                          at: now)
        case .pruneBlocked(let deleting, let reason):
            status.wouldDelete = deleting
            setConditions(ready: false, reason: "PruneBlocked",
                          message: "commit \(commit) waits for approval: \(reason) (provisionctl gitops approve \(source.name) \(commit))", at: now)
        case .unchanged:
            await markApplied(commit, planned, at: now)
        case .apply:
            do {
                let applied = try await reconciler.applyRevision(of: source, files: files ?? [], dryRun: false)
                await markApplied(commit, applied, at: now)
                logger.info("git source applied", metadata: ["commit": "\(commit)"])
            } catch let rejected as ApplyRejected {
                // Changed between the plan and the apply: the next sync plans again.
                status.errors = rejected.errors
                setConditions(ready: false, reason: "InvalidRevision", message: "commit \(commit) is not applied: \(rejected.errors.first.map { "\($0)" } ?? "")", at: now)
            } catch {
                setConditions(ready: false, reason: "ApplyFailed", message: "commit \(commit) is not applied: \(error)", at: now)
            }
        }
        return interval
    }

    private func markApplied(_ commit: String, _ plan: GitRevisionPlan, at time: String) async {
        if status.lastAppliedCommit != commit {
            status.lastAppliedAt = time
            do {
                try await reconciler.recordAppliedCommit(source.name, commit: commit)
            } catch {
                logger.warning("the applied commit is not recorded", metadata: ["error": "\(error)"])
            }
        }
        status.lastAppliedCommit = commit
        status.changes = plan.changes
        status.conflicts = plan.conflicts.isEmpty ? nil : plan.conflicts
        status.keptFromPrune = plan.keptFromPrune.isEmpty ? nil : plan.keptFromPrune
        // Detected drift is reported while it lasts; the last revert stays reported until a
        // later sync finds drift again, so that a reader polling after it still sees it.
        let drift = plan.drift.isEmpty ? (status.drift ?? []).filter(\.reverted) : plan.drift
        status.drift = drift.isEmpty ? nil : drift
        for drift in plan.drift {
            logger.notice(drift.reverted ? "drift reverted" : "drift detected",
                          metadata: ["object": "\(drift.kind.rawValue)/\(drift.name)", "changedBy": "\(drift.changedBy)",
                                     "fields": "\(drift.fields.map(\.path).joined(separator: ","))"])
        }
        var notes: [String] = []
        if !plan.conflicts.isEmpty { notes.append("\(plan.conflicts.count) object(s) left out: managed by another writer") }
        let detected = plan.drift.filter { !$0.reverted }.count
        if detected > 0 { notes.append("\(detected) object(s) differ from git (driftPolicy: detect)") }
        setConditions(ready: true, reason: "Synced", message: "commit \(commit) is applied" + (notes.isEmpty ? "" : "; " + notes.joined(separator: "; ")),
                      at: time)
    }

    private func setConditions(ready: Bool, reason: String, message: String, at time: String) {
        func transition(_ type: String, _ value: Bool) -> String {
            let before = status.conditions.first { $0.type == type }
            return before?.isTrue == value && before?.reason == reason ? before!.lastTransitionTime : time
        }
        status.conditions = [
            Condition(type: "Ready", status: ready, reason: reason, message: message, lastTransitionTime: transition("Ready", ready)),
            Condition(type: "Stalled", status: !ready, reason: reason, message: message, lastTransitionTime: transition("Stalled", !ready)),
        ]
    }
}

/// A git source as a spec document: how `serve --gitops` applies its source.
enum GitSourceDocument {
    static func yaml(_ source: GitSource) -> String {
        func quoted(_ text: String) -> String {
            let encoder = JSONEncoder()
            encoder.outputFormatting = .withoutEscapingSlashes
            return String(decoding: try! encoder.encode(text), as: UTF8.self)
        }
        var lines = ["apiVersion: provision/v1", "kind: GitSource", "metadata:", "  name: \(quoted(source.name))"]
        if let team = source.metadata.team { lines.append("  team: \(quoted(team))") }
        lines += ["spec:", "  url: \(quoted(source.spec.url))", "  ref: \(quoted(source.spec.ref))"]
        if !source.spec.path.isEmpty { lines.append("  path: \(quoted(source.spec.path))") }
        lines.append("  interval: \(source.spec.intervalMilliseconds)ms")
        return lines.joined(separator: "\n") + "\n"
    }
}
