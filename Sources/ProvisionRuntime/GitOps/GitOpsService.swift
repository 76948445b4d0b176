import Foundation
import Logging
import ProvisionControl
import ProvisionModel
import ProvisionPipeline
import ServiceLifecycle

/// Keeps the server in sync with one git source: every interval (or at once, when a push hook
/// asks), fetch, resolve the ref, read every spec under the path, validate and plan the whole
/// revision as `gitops:<name>` with pruning, decide (`GitSyncPolicy`), apply. Products of the
/// source keep running whatever happens to the repository.
public actor GitOpsService: Service, GitSources {
    public struct Source: Sendable {
        public var name: String
        public var url: String
        public var ref: String
        public var path: String
        public var interval: Duration
        public var policy = GitSyncPolicy()

        public init(name: String, url: String, ref: String = "main", path: String = "", interval: Duration = .seconds(60)) {
            self.name = name
            self.url = url
            self.ref = ref
            self.path = path
            self.interval = interval
        }

        /// `URL`, `URL#REF` or `URL#REF:PATH` (`serve --gitops`).
        public static func parse(_ text: String, name: String, interval: Duration) -> Source? {
            guard !text.isEmpty else { return nil }
            guard let hash = text.lastIndex(of: "#") else { return Source(name: name, url: text, interval: interval) }
            let url = String(text[..<hash])
            let rest = text[text.index(after: hash)...]
            let (ref, path) = rest.firstIndex(of: ":").map { (String(rest[..<$0]), String(rest[rest.index(after: $0)...])) } ?? (String(rest), "")
            guard !url.isEmpty else { return nil }
            return Source(name: name, url: url, ref: ref.isEmpty ? "main" : ref, path: path, interval: interval)
        }
    }

    private let source: Source
    private let repository: GitRepository
    private let reconciler: Reconciler
    private let logger: Logger
    private var status: GitSourceStatus
    private var approvedCommit: String?
    private var failures = 0
    private let backoff = RetryBackoff(initial: .seconds(1), cap: .seconds(300))
    /// The wait between syncs, cancelled by a push hook or an approval.
    private var sleeping: Task<Void, Never>?
    /// A sync was asked for while one ran: the next starts at once.
    private var wakeRequested = false

    public init(source: Source, dataDirectory: String, reconciler: Reconciler, logger: Logger) {
        self.source = source
        repository = GitRepository(directory: "\(dataDirectory)/gitops/\(source.name).git", url: source.url)
        self.reconciler = reconciler
        self.logger = logger
        status = GitSourceStatus(name: source.name, url: PostgresURL.redact(source.url), ref: source.ref, path: source.path,
                                 intervalSeconds: Int(source.interval.components.seconds), managedBy: "gitops:\(source.name)")
    }

    private var writer: String { "gitops:\(source.name)" }
    /// The source applies as an admin, naming itself the writer: it changes and prunes only
    /// what it manages.
    private var caller: Caller { Caller(token: writer, team: "admin", role: .admin) }

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let delay = await syncOnce()
            if wakeRequested {
                wakeRequested = false
                continue
            }
            // The interval, or a push hook (which cancels the sleep), whichever comes first;
            // a shutdown ends the wait too.
            let sleep = Task<Void, Never> { try? await Task.sleep(for: delay) }
            sleeping = sleep
            await withGracefulShutdownHandler { await sleep.value } onGracefulShutdown: { sleep.cancel() }
            sleeping = nil
            wakeRequested = false
        }
    }

    private func wakeUp() {
        wakeRequested = true
        sleeping?.cancel()
    }

    // MARK: GitSources

    public func statuses() -> [GitSourceStatus] { [status] }

    public func requestSync(_ name: String) -> Bool {
        guard name == source.name else { return false }
        wakeUp()
        return true
    }

    public func approve(_ name: String, commit: String) -> Bool {
        guard name == source.name else { return false }
        approvedCommit = commit
        wakeUp()
        return true
    }

    // MARK: Sync

    /// One sync; returns how long to wait before the next.
    func syncOnce() async -> Duration {
        let now = Timestamp.format(Reconciler.systemClock())
        let commit: String
        let files: [SpecFile]?
        do {
            try await repository.fetch()
            commit = try await repository.resolve(source.ref)
            files = try await repository.specFiles(at: commit, under: source.path)
        } catch {
            failures += 1
            let delay = backoff.delay(attempt: failures, unitRandom: Double.random(in: 0..<1))
            setConditions(ready: false, reason: "FetchFailed", message: "\(error); retrying in \(delay); the products keep running", at: now)
            logger.warning("git source cannot be fetched", metadata: ["source": "\(source.name)", "error": "\(error)"])
            return delay
        }
        failures = 0
        status.lastFetchedCommit = commit
        status.lastFetchedAt = now
        let request = ApplyRequest(files: files ?? [], dryRun: true, prune: true, managedBy: writer)
        var errors: [SpecError] = []
        var changes: [PlannedChange] = []
        do {
            changes = try await reconciler.plannedChanges(request, as: caller)
        } catch let rejected as ApplyRejected {
            errors = rejected.errors
        } catch {
            errors = [SpecError(file: "-", line: 1, column: 1, path: "", message: "\(error)")]
        }
        let owned = await reconciler.productNames(managedBy: writer)
        let decision = source.policy.decide(commit: commit, specFiles: files?.count, errors: errors, changes: changes, owned: owned,
                                            approved: approvedCommit)
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
            markApplied(commit, changes: changes, at: now)
        case .apply:
            var applying = request
            applying.dryRun = false
            do {
                let applied = try await reconciler.apply(applying, as: caller)
                markApplied(commit, changes: applied.changes, at: now)
                logger.info("git source applied", metadata: ["source": "\(source.name)", "commit": "\(commit)"])
            } catch let rejected as ApplyRejected {
                // Changed between the plan and the apply: the next sync plans again.
                status.errors = rejected.errors
                setConditions(ready: false, reason: "InvalidRevision", message: "commit \(commit) is not applied: \(rejected.errors.first.map { "\($0)" } ?? "")", at: now)
            } catch {
                setConditions(ready: false, reason: "ApplyFailed", message: "commit \(commit) is not applied: \(error)", at: now)
            }
        }
        return source.interval
    }

    private func markApplied(_ commit: String, changes: [PlannedChange], at time: String) {
        if status.lastAppliedCommit != commit { status.lastAppliedAt = time }
        status.lastAppliedCommit = commit
        status.changes = changes
        setConditions(ready: true, reason: "Synced", message: "commit \(commit) is applied", at: time)
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
