import Foundation
import ProvisionModel
import ProvisionPipeline

/// A dataset as the control plane keeps it.
public struct StoredDataset: Sendable, Equatable, Codable {
    public var dataset: Dataset
    public var generation: Int
    public var createdAt: TimestampMilliseconds
    /// Who manages it; nil in state saved before writers were recorded, which the CLI made.
    public var managedBy: Writer? = nil
    /// Who made its last change: another writer than its manager only where a git source
    /// manages it (drift, which the source's next sync reverts or reports).
    public var changedBy: Writer? = nil
    /// The version of its record in the store (not part of the record).
    public var resourceVersion: ResourceVersion = 0

    public var manager: Writer { managedBy ?? .cli }

    enum CodingKeys: String, CodingKey { case dataset, generation, createdAt, managedBy, changedBy }
}

/// A product as the control plane keeps it: the desired spec, which build of its output is
/// current, and the last reported status. The status is a record of its own in the store.
public struct StoredProduct: Sendable, Equatable, Codable {
    public var product: DataProduct
    public var generation: Int
    public var createdAt: TimestampMilliseconds
    /// Increases when the output must be rebuilt from scratch.
    public var build: Int
    /// When the current build began; `since` is measured from here, so restarts do not move it.
    public var buildStartedAt: TimestampMilliseconds
    /// How the current build relates to the output of the previous one (nil: fresh).
    public var buildKind: SinkBuild.Kind? = nil
    public var status: ProductStatus = ProductStatus()
    /// Set while the product is being deleted, so a crash mid-delete finishes the job on restart.
    public var deleting: Bool
    /// A paused product keeps its output and checkpoint but reads nothing until resumed.
    public var paused: Bool
    /// The spec of the output to remove before the next build starts, if a rebuild is pending.
    public var pendingCleanup: DataProductSpec?
    /// Set by `resume --accept-loss` until the next run has moved past records lost to
    /// retention.
    public var acceptsLoss: Bool? = nil
    /// Who manages it; nil in state saved before writers were recorded, which the CLI made.
    public var managedBy: Writer? = nil
    /// Who made its last change: another writer than its manager only where a git source
    /// manages it (drift, which the source's next sync reverts or reports).
    public var changedBy: Writer? = nil
    /// The version of its spec record in the store (not part of the record); a status update
    /// does not change it.
    public var resourceVersion: ResourceVersion = 0

    public var manager: Writer { managedBy ?? .cli }

    /// Everything but the status, which is stored apart, and the version, which the store keeps.
    enum CodingKeys: String, CodingKey {
        case product, generation, createdAt, build, buildStartedAt, buildKind, deleting, paused, pendingCleanup, acceptsLoss, managedBy, changedBy
    }

    public init(product: DataProduct, generation: Int, createdAt: TimestampMilliseconds, build: Int,
                buildStartedAt: TimestampMilliseconds, status: ProductStatus, deleting: Bool, paused: Bool,
                pendingCleanup: DataProductSpec?)
    {
        self.product = product
        self.generation = generation
        self.createdAt = createdAt
        self.build = build
        self.buildStartedAt = buildStartedAt
        self.status = status
        self.deleting = deleting
        self.paused = paused
        self.pendingCleanup = pendingCleanup
    }

    /// The same product apart from its status.
    func sameSpecRecord(as other: StoredProduct) -> Bool {
        var this = self
        this.status = other.status
        this.resourceVersion = other.resourceVersion
        return this == other
    }
}

public struct ControlState: Sendable, Equatable {
    public var datasets: [String: StoredDataset] = [:]
    public var products: [String: StoredProduct] = [:]
    public var tokens: [String: StoredToken] = [:]
    /// Keyed by `StoredSecret.id`.
    public var secrets: [String: StoredSecret] = [:]
    public var gitSources: [String: StoredGitSource] = [:]

    public init() {}

    /// The secrets of `team`, by name.
    public func secrets(of team: String) -> [String: StoredSecret] {
        var found: [String: StoredSecret] = [:]
        for secret in secrets.values where secret.team == team { found[secret.name] = secret }
        return found
    }
}

/// A change was not saved, so it was not made.
public struct ControlStateNotSaved: Error, Sendable, CustomStringConvertible {
    public var cause: String

    public var description: String { "the change was not saved, so it was not made: \(cause)" }
}

/// An API token as the control plane keeps it: the secret itself is never stored, only its
/// SHA-256.
public struct StoredToken: Sendable, Equatable, Codable {
    public var name: String
    public var team: String
    public var role: TokenRole
    public var createdAt: TimestampMilliseconds
    public var expiresAt: TimestampMilliseconds?
    /// Hex SHA-256 of the secret.
    public var secretHash: String
    /// The version of its record in the store (not part of the record).
    public var resourceVersion: ResourceVersion = 0

    enum CodingKeys: String, CodingKey { case name, team, role, createdAt, expiresAt, secretHash }

    public init(name: String, team: String, role: TokenRole, createdAt: TimestampMilliseconds, expiresAt: TimestampMilliseconds?,
                secretHash: String)
    {
        self.name = name
        self.team = team
        self.role = role
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.secretHash = secretHash
    }
}

/// A team's secret as the control plane keeps it: its value sealed (AES-GCM) with the server's
/// secret key, so that the store's file and its backups do not hold it in the clear.
public struct StoredSecret: Sendable, Equatable, Codable {
    public var team: String
    public var name: String
    public var createdAt: TimestampMilliseconds
    public var updatedAt: TimestampMilliseconds
    /// Base64 of the AES-GCM combined box: nonce, ciphertext, tag.
    public var sealed: String
    public var resourceVersion: ResourceVersion = 0

    enum CodingKeys: String, CodingKey { case team, name, createdAt, updatedAt, sealed }

    public init(team: String, name: String, createdAt: TimestampMilliseconds, updatedAt: TimestampMilliseconds, sealed: String) {
        self.team = team
        self.name = name
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.sealed = sealed
    }

    public var id: String { Self.id(team: team, name: name) }

    public static func id(team: String, name: String) -> String { "\(team)/\(name)" }
}

/// A git source as the control plane keeps it: its spec, and what an operator decided about
/// it, which a restart must not forget.
public struct StoredGitSource: Sendable, Equatable, Codable {
    public var source: GitSource
    public var generation: Int
    public var createdAt: TimestampMilliseconds
    public var managedBy: Writer?
    /// Suspended: no sync runs until it is resumed; its products keep running.
    public var suspended: Bool = false
    /// The commit whose deletions an operator approved (`provisionctl gitops approve`).
    public var approvedCommit: String? = nil
    /// The last commit applied whole, so that its status survives a restart.
    public var appliedCommit: String? = nil
    public var resourceVersion: ResourceVersion = 0

    public var manager: Writer { managedBy ?? .cli }

    enum CodingKeys: String, CodingKey { case source, generation, createdAt, managedBy, suspended, approvedCommit, appliedCommit }

    public init(source: GitSource, generation: Int, createdAt: TimestampMilliseconds, managedBy: Writer) {
        self.source = source
        self.generation = generation
        self.createdAt = createdAt
        self.managedBy = managedBy
    }
}
