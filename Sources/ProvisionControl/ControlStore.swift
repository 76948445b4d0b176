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

    public var manager: Writer { managedBy ?? .cli }
}

/// A product as the control plane keeps it: the desired spec, which build of its output is
/// current, and the last reported status.
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
    public var status: ProductStatus
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

    public var manager: Writer { managedBy ?? .cli }
}

public struct ControlState: Sendable, Equatable, Codable {
    public var datasets: [String: StoredDataset] = [:]
    public var products: [String: StoredProduct] = [:]

    public init() {}
}

/// A change was not saved, so it was not made.
public struct ControlStateNotSaved: Error, Sendable, CustomStringConvertible {
    public var cause: String

    public var description: String { "the change was not saved, so it was not made: \(cause)" }
}

/// Where specs and status live between restarts. A JSON file today; compacted topics when
/// several servers share one control plane.
public protocol ControlStore: Sendable {
    func load() throws -> ControlState
    func save(_ state: ControlState) throws
}

public struct FileControlStore: ControlStore {
    public let path: String

    public init(directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = "\(directory)/state.json"
    }

    public func load() throws -> ControlState {
        guard let data = FileManager.default.contents(atPath: path) else { return ControlState() }
        return try JSONDecoder().decode(ControlState.self, from: data)
    }

    public func save(_ state: ControlState) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try DurableFile.replace(path, with: try encoder.encode(state))
    }
}
