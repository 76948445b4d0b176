/// A git source as the API shows it: where it reads, what it last fetched and applied, and
/// why it waits, if it does.
public struct GitSourceStatus: Sendable, Equatable, Codable {
    public var name: String
    /// The team its products belong to (none: an admin's source, whose specs name their teams).
    public var team: String?
    /// The repository, without credentials.
    public var url: String
    public var ref: String
    public var path: String
    public var intervalSeconds: Int
    public var driftPolicy: String
    /// The writer its objects are managed by: `gitops:<name>`.
    public var managedBy: String
    /// No sync runs until it is resumed; its products keep running.
    public var suspended: Bool
    /// The commit whose deletions an admin approved.
    public var approvedCommit: String?
    public var lastFetchedCommit: String?
    public var lastFetchedAt: String?
    public var lastAppliedCommit: String?
    public var lastAppliedAt: String?
    /// `Ready` (the last fetched commit is applied) and `Stalled` (why not: `FetchFailed`,
    /// `InvalidRevision`, `PruneBlocked`, `Suspended`).
    public var conditions: [Condition]
    /// For `InvalidRevision`: what is wrong, located in the commit's files.
    public var errors: [SpecError]?
    /// For `PruneBlocked`: the products the commit would delete.
    public var wouldDelete: [String]?
    /// What the last applied commit changed, per object.
    public var changes: [PlannedChange]?
    /// Documents of the commit left out: another writer manages those objects.
    public var conflicts: [SpecError]?
    /// Objects changed outside git since the source applied them: reverted, or reported.
    public var drift: [DriftReport]?
    /// Products the commit no longer lists, kept by `provision/prune: disabled`.
    public var keptFromPrune: [String]?

    public init(source: GitSource, suspended: Bool, approvedCommit: String?, appliedCommit: String?) {
        name = source.name
        team = source.metadata.team
        url = PostgresURL.redact(source.spec.url)
        ref = source.spec.ref
        path = source.spec.path
        intervalSeconds = Int(source.spec.intervalMilliseconds / 1000)
        driftPolicy = source.spec.driftPolicy.rawValue
        managedBy = source.writer
        self.suspended = suspended
        self.approvedCommit = approvedCommit
        lastAppliedCommit = appliedCommit
        conditions = []
    }
}

/// The body of `POST /v1/sources/{name}/approve`: the commit whose deletions may go ahead.
public struct ApproveSyncRequest: Sendable, Codable {
    public var commit: String

    public init(commit: String) {
        self.commit = commit
    }
}

/// What the API asks of the git sources a server follows, beyond their records.
public protocol GitSources: Sendable {
    /// The status of each named source, as far as its syncs have got.
    func statuses(of sources: [GitSourceStatus]) async -> [GitSourceStatus]
    /// Syncs the source now (a push hook); false when there is no such source.
    func requestSync(_ name: String) async -> Bool
}
