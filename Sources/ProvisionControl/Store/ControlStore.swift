/// Which object a record holds. Specs and status are separate records, so a status update
/// rewrites one small record and never a spec.
public struct ObjectKey: Sendable, Hashable, Comparable, CustomStringConvertible {
    public enum Kind: UInt8, Sendable, CaseIterable {
        case dataset = 1
        case product = 2
        case productStatus = 3
        /// An API token: its team, role, expiry and the hash of its secret.
        case token = 4
        /// A team's secret, sealed: `team/name`.
        case secret = 5
        /// A git source: its spec and what must survive a restart (approval, suspension).
        case gitSource = 6

        public var name: String {
            switch self {
            case .dataset: return "dataset"
            case .product: return "product"
            case .productStatus: return "product-status"
            case .token: return "token"
            case .secret: return "secret"
            case .gitSource: return "git-source"
            }
        }
    }

    public var kind: Kind
    public var name: String

    public init(_ kind: Kind, _ name: String) {
        self.kind = kind
        self.name = name
    }

    public static func dataset(_ name: String) -> ObjectKey { ObjectKey(.dataset, name) }
    public static func product(_ name: String) -> ObjectKey { ObjectKey(.product, name) }
    public static func productStatus(_ name: String) -> ObjectKey { ObjectKey(.productStatus, name) }
    public static func token(_ name: String) -> ObjectKey { ObjectKey(.token, name) }
    public static func secret(_ id: String) -> ObjectKey { ObjectKey(.secret, id) }
    public static func gitSource(_ name: String) -> ObjectKey { ObjectKey(.gitSource, name) }

    public var description: String { "\(kind.name)/\(name)" }

    public static func < (lhs: ObjectKey, rhs: ObjectKey) -> Bool {
        (lhs.kind.rawValue, lhs.name) < (rhs.kind.rawValue, rhs.name)
    }
}

/// The store's position: every commit takes the next one, and each record keeps the one of
/// its last write (its `resourceVersion`).
public typealias ResourceVersion = UInt64

/// One object's record as stored: its encoded value and the version of its last write.
public struct VersionedRecord: Sendable, Equatable {
    public var resourceVersion: ResourceVersion
    public var value: [UInt8]

    public init(resourceVersion: ResourceVersion, value: [UInt8]) {
        self.resourceVersion = resourceVersion
        self.value = value
    }
}

/// What a write requires of the record it replaces: the compare of compare-and-swap.
public enum WritePrecondition: Sendable, Equatable {
    /// Whatever is there (status, whose one writer is the product's runner).
    case none
    /// No record (a create).
    case absent
    /// The record at exactly this version (an update or delete by someone who read it).
    case version(ResourceVersion)
}

public struct RecordWrite: Sendable, Equatable {
    public var key: ObjectKey
    /// The new value; nil deletes the record.
    public var value: [UInt8]?
    public var precondition: WritePrecondition

    public init(key: ObjectKey, value: [UInt8]?, precondition: WritePrecondition) {
        self.key = key
        self.value = value
        self.precondition = precondition
    }
}

/// A write whose precondition did not hold: someone else changed the record since it was
/// read. Nothing of the commit was written.
public struct StoreConflict: Error, Sendable, Equatable, CustomStringConvertible {
    public var key: ObjectKey
    public var expected: WritePrecondition
    /// The version found (nil: no record).
    public var found: ResourceVersion?

    public var description: String {
        switch expected {
        case .absent: return "\(key) exists already (resourceVersion \(found.map(String.init) ?? "-"))"
        case .version(let version):
            if let found { return "\(key) was changed since it was read: resourceVersion \(found), not \(version)" }
            return "\(key) was deleted since it was read at resourceVersion \(version)"
        case .none: return "\(key) conflicts"
        }
    }
}

/// One committed change to one record, as a watch delivers it.
public struct StoreEvent: Sendable, Equatable {
    public var resourceVersion: ResourceVersion
    public var key: ObjectKey
    /// The new value; nil when the record was deleted.
    public var value: [UInt8]?

    public init(resourceVersion: ResourceVersion, key: ObjectKey, value: [UInt8]?) {
        self.resourceVersion = resourceVersion
        self.key = key
        self.value = value
    }
}

/// A watch asked to start before the oldest change the store still remembers, or fell so
/// far behind that its buffer overflowed: the watcher reads a fresh snapshot and watches
/// from its version (Kubernetes answers `410 Gone` for the same).
public struct WatchExpired: Error, Sendable, Equatable, CustomStringConvertible {
    public var requested: ResourceVersion
    public var oldestAvailable: ResourceVersion

    public var description: String {
        "changes after resourceVersion \(requested) are no longer kept (oldest: \(oldestAvailable)); read the objects again and watch from their version"
    }
}

/// Every record at one version of the store.
public struct StoreSnapshot: Sendable {
    public var records: [ObjectKey: VersionedRecord]
    public var resourceVersion: ResourceVersion

    public init(records: [ObjectKey: VersionedRecord] = [:], resourceVersion: ResourceVersion = 0) {
        self.records = records
        self.resourceVersion = resourceVersion
    }
}

/// Where the control plane's objects live between restarts: one record per object, keyed by
/// kind and name, each with the version of its last write; writes are atomic batches of
/// compare-and-swaps; a watch streams every committed change in version order.
///
/// The embedded implementation is an append-only file of commits. The same records fit a
/// compacted Kafka topic (key: the object key, value: the record, a tombstone for a
/// delete), the way Kafka Connect keeps connector configs and status; a multi-record commit
/// is then a transaction, or records followed by a commit marker as Connect writes task
/// configs.
public protocol ControlStore: AnyObject, Sendable {
    /// Every record as of now.
    func snapshot() async throws -> StoreSnapshot

    /// Writes all of `writes` or none: when any precondition fails, throws `StoreConflict`
    /// and writes nothing. Returns the version the writes took.
    /// - Parameter durable: the commit is on stable storage when this returns. Status,
    ///   which the server can report again, may be written without waiting for the disk; it
    ///   survives the process being killed, not the machine losing power.
    func commit(_ writes: [RecordWrite], durable: Bool) async throws -> ResourceVersion

    /// The changes committed after `version`, in order, then each new one as it commits.
    /// Throws `WatchExpired` (at once, or later through the stream) when they are no longer
    /// all available.
    func watch(from version: ResourceVersion) async throws -> AsyncThrowingStream<StoreEvent, Error>
}
