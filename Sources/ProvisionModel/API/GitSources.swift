/// A git source as the API shows it: where it reads, what it last fetched and applied, and
/// why it waits, if it does.
public struct GitSourceStatus: Sendable, Equatable, Codable {
    public var name: String
    /// The repository, without credentials.
    public var url: String
    public var ref: String
    public var path: String
    public var intervalSeconds: Int
    /// The writer its objects are managed by: `gitops:<name>`.
    public var managedBy: String
    public var lastFetchedCommit: String?
    public var lastFetchedAt: String?
    public var lastAppliedCommit: String?
    public var lastAppliedAt: String?
    /// `Ready` (the last fetched commit is applied) and `Stalled` (why not: `FetchFailed`,
    /// `InvalidRevision`, `PruneBlocked`).
    public var conditions: [Condition]
    /// For `InvalidRevision`: what is wrong, located in the commit's files.
    public var errors: [SpecError]?
    /// For `PruneBlocked`: the products the commit would delete.
    public var wouldDelete: [String]?
    /// What the last applied commit changed, per object.
    public var changes: [PlannedChange]?

    public init(name: String, url: String, ref: String, path: String, intervalSeconds: Int, managedBy: String) {
        self.name = name
        self.url = url
        self.ref = ref
        self.path = path
        self.intervalSeconds = intervalSeconds
        self.managedBy = managedBy
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

/// What the API asks of the git sources a server follows.
public protocol GitSources: Sendable {
    func statuses() async -> [GitSourceStatus]
    /// Syncs the source now (a push hook); false when there is no such source.
    func requestSync(_ name: String) async -> Bool
    /// Lets the source apply `commit` though it deletes more than its policy allows.
    func approve(_ name: String, commit: String) async -> Bool
}
