import Foundation
import ProvisionModel

/// What one revision of a git source would do, or did: the plan, and what a source reports
/// beside it.
public struct GitRevisionPlan: Sendable {
    public var changes: [PlannedChange]
    /// Documents left out: another writer manages their objects.
    public var conflicts: [SpecError]
    public var drift: [DriftReport]
    /// Products no longer in git that `provision/prune: disabled` keeps.
    public var keptFromPrune: [String]
    /// The products the source manages before the revision.
    public var owned: Set<String>

    public init(changes: [PlannedChange] = [], conflicts: [SpecError] = [], drift: [DriftReport] = [], keptFromPrune: [String] = [],
                owned: Set<String> = [])
    {
        self.changes = changes
        self.conflicts = conflicts
        self.drift = drift
        self.keptFromPrune = keptFromPrune
        self.owned = owned
    }
}

/// Git sources as the control plane keeps them. Their syncs run in the GitOps service; what
/// must survive a restart (the spec, a suspension, an approval, the last applied commit) is
/// a record here.
extension Reconciler {
    /// Every git source, for the service that syncs them.
    public func storedGitSources() -> [String: StoredGitSource] { currentState.gitSources }

    /// The git sources of the caller's team (an admin's: all), by name.
    public func gitSources(as caller: Caller) -> [StoredGitSource] {
        currentState.gitSources.values.filter { caller.owns(team: $0.source.metadata.team) }.sorted { $0.source.name < $1.source.name }
    }

    public func gitSource(_ name: String, as caller: Caller) -> StoredGitSource? {
        currentState.gitSources[name].flatMap { caller.owns(team: $0.source.metadata.team) ? $0 : nil }
    }

    /// Who a source's sync applies as: an editor of its team (an admin when it names none),
    /// recorded as `gitops:<name>`.
    nonisolated static func syncCaller(of source: GitSource) -> Caller {
        Caller(token: source.writer, team: source.metadata.team ?? "admin", role: source.metadata.team == nil ? .admin : .editor)
    }

    /// Plans `files` as the revision of `source` (pruning what it manages and omits), and
    /// applies the plan unless `dryRun`.
    public func applyRevision(of source: GitSource, files: [SpecFile], dryRun: Bool) async throws -> GitRevisionPlan {
        let owned = Set(currentState.products.values.filter { $0.manager.rawValue == source.writer && !$0.deleting }.map(\.product.name))
        let request = ApplyRequest(files: files, dryRun: dryRun, prune: true)
        let caller = Self.syncCaller(of: source)
        let writer = Writer(source.writer)
        let plan: ApplyPlan
        var changes: [PlannedChange]
        if dryRun {
            // Without the dry run's backfill estimates: they read the log, and a sync only decides.
            plan = try plannedChanges(request, as: caller, writer: writer)
            changes = plan.changes
        } else {
            let applied = try await applyPlanned(request, as: caller, writer: writer)
            (plan, changes) = (applied.plan, applied.response.changes)
        }
        return GitRevisionPlan(changes: changes, conflicts: plan.conflicts, drift: plan.drift, keptFromPrune: plan.keptFromPrune,
                               owned: owned)
    }

    /// Suspends (no sync runs) or resumes a source; nil when the caller sees no such source.
    public func setGitSourceSuspended(_ name: String, _ suspended: Bool, as caller: Caller) async throws -> StoredGitSource? {
        guard gitSource(name, as: caller) != nil else { return nil }
        guard caller.role >= .editor else { throw AccessDenied.needsEditor(caller, to: suspended ? "suspend a git source" : "resume a git source") }
        return try await changeGitSource(name) { $0.suspended = suspended }
    }

    /// Lets the source apply `commit` though it deletes more than the source's prune limit.
    public func approveGitSourceCommit(_ name: String, commit: String, as caller: Caller) async throws -> StoredGitSource? {
        guard gitSource(name, as: caller) != nil else { return nil }
        guard caller.isAdmin else {
            throw AccessDenied("token '\(caller.token)' is a \(caller.role.rawValue) of team '\(caller.team)'; approving deletions needs an admin token")
        }
        return try await changeGitSource(name) { $0.approvedCommit = commit }
    }

    /// Records the commit a sync applied whole.
    public func recordAppliedCommit(_ name: String, commit: String) async throws {
        _ = try await changeGitSource(name) { $0.appliedCommit = commit }
    }

    /// Deletes a source. Its products stay, still managed by it: a source of the same name
    /// picks them up again, and until then nothing prunes them.
    public func deleteGitSource(_ name: String, as caller: Caller) async throws -> Bool {
        guard gitSource(name, as: caller) != nil else { return false }
        guard caller.role >= .editor else { throw AccessDenied.needsEditor(caller, to: "delete a git source") }
        try await commit { current in
            var next = current
            next.gitSources[name] = nil
            return (next, [], [], ())
        }
        return true
    }

    private func changeGitSource(_ name: String, _ change: @escaping (inout StoredGitSource) -> Void) async throws -> StoredGitSource? {
        try await commit { current -> (ControlState, [String], [String], StoredGitSource?) in
            guard var stored = current.gitSources[name] else { return (current, [], [], nil) }
            change(&stored)
            var next = current
            next.gitSources[name] = stored
            return (next, [], [], stored)
        }.map { self.currentState.gitSources[$0.source.name] ?? $0 }
    }

    /// The credentials a source fetches with, resolved from its team's secrets or the
    /// server's environment; nil when it names none.
    public func gitCredentials(of source: GitSource) -> (username: String, password: String)? {
        guard let password = source.spec.password.flatMap({ resolve($0, team: source.metadata.team) }) else { return nil }
        let username = source.spec.username.flatMap { resolve($0, team: source.metadata.team) } ?? "git"
        return (username, password)
    }

    private func resolve(_ text: String, team: String?) -> String? {
        switch ValueReference.parse(text) {
        case .environment(let name): return sinks.environment[name]
        case .secret(let name): return secretValues(of: team)[name]
        case nil: return nil
        }
    }

    /// The git source managing `product`, if one does (and still exists).
    func managingGitSource(of product: StoredProduct) -> String? {
        product.manager.gitSource.flatMap { currentState.gitSources[$0] != nil ? $0 : nil }
    }
}
