/// Metadata as the server reports it: the author's fields plus what the server tracks.
public struct ResourceMetadata: Sendable, Equatable, Codable {
    public var name: String
    public var team: String?
    public var owner: String?
    public var description: String?
    public var labels: [String: String]?
    /// Increases each time the spec changes.
    public var generation: Int
    public var creationTimestamp: String
    /// The writer that manages the object: `cli`, `api:<team>`, `gitops:<source>`.
    public var managedBy: String?
    /// Changes on every write of the object's spec (not of its status). An apply that
    /// carries it changes the object only if it is still at this version (else `409 Conflict`).
    public var resourceVersion: String?
    /// Set while the object is being deleted (its outputs removed by its deletion policy).
    public var deleting: Bool?

    public init(_ metadata: ObjectMetadata, generation: Int, creationTimestamp: String, managedBy: String? = nil,
                resourceVersion: String? = nil)
    {
        self.managedBy = managedBy
        self.resourceVersion = resourceVersion
        name = metadata.name
        team = metadata.team
        owner = metadata.owner
        description = metadata.description
        labels = metadata.labels
        self.generation = generation
        self.creationTimestamp = creationTimestamp
    }
}

public struct ProductResource: Sendable, Equatable, Codable {
    public var apiVersion = "provision/v1"
    public var kind = "DataProduct"
    public var metadata: ResourceMetadata
    public var spec: DataProductSpec
    public var status: ProductStatus

    public init(metadata: ResourceMetadata, spec: DataProductSpec, status: ProductStatus) {
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }
}

public struct DatasetStatus: Sendable, Equatable, Codable {
    public var records: Int64
    public var startOffset: Int64
    public var endOffset: Int64
    /// On `GET /v1/datasets/{name}`: the time of the oldest and the newest record kept, and
    /// records per second over the five minutes before now (by record time).
    public var oldestRecordTime: String?
    public var newestRecordTime: String?
    public var recentRecordsPerSecond: Double?

    public init(records: Int64, startOffset: Int64, endOffset: Int64) {
        self.records = records
        self.startOffset = startOffset
        self.endOffset = endOffset
    }
}

public struct DatasetResource: Sendable, Equatable, Codable {
    public var apiVersion = "provision/v1"
    public var kind = "Dataset"
    public var metadata: ResourceMetadata
    public var spec: DatasetSpec
    public var status: DatasetStatus
    /// On `GET /v1/datasets/{name}`: the products that read it.
    public var lineage: DatasetLineage?
    /// On `GET /v1/datasets/{name}`: the most recent records, newest last, with `pii` fields
    /// masked unless the caller's team owns the dataset.
    public var sample: [JSONValue]?

    public init(metadata: ResourceMetadata, spec: DatasetSpec, status: DatasetStatus) {
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }
}

/// The body of `POST /v1/apply`.
public struct ApplyRequest: Sendable, Codable {
    public var files: [SpecFile]
    public var dryRun: Bool
    /// Delete the writer's products that exist on the server but are absent from `files`.
    public var prune: Bool
    /// Take over objects another writer manages instead of being refused.
    public var force: Bool?
    /// Who applies (`cli` when absent): it manages what it creates, and changes and prunes
    /// only that.
    public var managedBy: String?

    public init(files: [SpecFile], dryRun: Bool, prune: Bool = false, force: Bool = false, managedBy: String? = nil) {
        self.files = files
        self.dryRun = dryRun
        self.prune = prune
        self.force = force ? true : nil
        self.managedBy = managedBy
    }

    private enum CodingKeys: String, CodingKey { case files, dryRun, prune, force, managedBy }

    /// `dryRun` and `prune` are false when absent.
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        files = try container.decode([SpecFile].self, forKey: .files)
        dryRun = try container.decodeIfPresent(Bool.self, forKey: .dryRun) ?? false
        prune = try container.decodeIfPresent(Bool.self, forKey: .prune) ?? false
        force = try container.decodeIfPresent(Bool.self, forKey: .force)
        managedBy = try container.decodeIfPresent(String.self, forKey: .managedBy)
    }
}

/// What a backfill will read: the source records inside its window now (from the log's time
/// index), their bytes estimated from the latest records' average size, and where it starts.
public struct BackfillEstimate: Sendable, Equatable, Codable {
    public var records: Int64
    public var bytesEstimate: Int64
    public var since: String?

    public init(records: Int64, bytesEstimate: Int64, since: String?) {
        self.records = records
        self.bytesEstimate = bytesEstimate
        self.since = since
    }
}

public struct PlannedChange: Sendable, Equatable, Codable {
    public enum Action: String, Sendable, Codable {
        case create
        /// The spec changed but the output stays: metadata or deletion policy.
        case update
        /// The output changes (from, where, select, key, backfill, sink): rebuilt from scratch.
        case updateRebuild = "update-rebuild"
        case unchanged
        case delete
    }

    public var kind: SpecKind
    public var name: String
    public var action: Action
    public var detail: String?
    /// For an update: the fields it changes.
    public var fields: [FieldChange]?
    /// The object's version once applied (the commit's for a change; unset in a dry run).
    public var resourceVersion: String?
    /// On a dry run, for a product whose output is built: what its backfill will read.
    public var backfill: BackfillEstimate?

    public init(kind: SpecKind, name: String, action: Action, detail: String? = nil, fields: [FieldChange]? = nil) {
        self.kind = kind
        self.name = name
        self.action = action
        self.detail = detail
        self.fields = fields
    }

    /// Whether the change builds the output again from the start of the backfill.
    public var rebuilds: Bool { action == .updateRebuild || action == .create }
}

/// An object a git source manages that was changed outside git: by whom, which fields, and
/// whether the sync put git's version back.
public struct DriftReport: Sendable, Equatable, Codable {
    public var kind: SpecKind
    public var name: String
    /// The writer of the change (`api:<team>`, `cli`).
    public var changedBy: String
    /// The fields, from what git says to what the change made them.
    public var fields: [FieldChange]
    public var reverted: Bool

    public init(kind: SpecKind, name: String, changedBy: String, fields: [FieldChange], reverted: Bool) {
        self.kind = kind
        self.name = name
        self.changedBy = changedBy
        self.fields = fields
        self.reverted = reverted
    }
}

public struct ApplyResponse: Sendable, Codable {
    public var dryRun: Bool
    public var changes: [PlannedChange]
    /// What the caller should know, such as a change a git source will revert.
    public var warnings: [String]?

    public init(dryRun: Bool, changes: [PlannedChange]) {
        self.dryRun = dryRun
        self.changes = changes
    }
}

/// Every API error: a stable code, a human message and, for spec errors, the located details.
/// The stable codes of API errors: clients branch on these, never on messages.
public enum APIErrorCode: String, Sendable, Codable, CaseIterable {
    case invalidSpec = "InvalidSpec"
    case invalidRequest = "InvalidRequest"
    case invalidRecord = "InvalidRecord"
    case invalidTopic = "InvalidTopic"
    /// No token, or one that is unknown, expired or revoked (401).
    case unauthorized = "Unauthorized"
    /// The token's role does not allow the request (403).
    case forbidden = "Forbidden"
    case notFound = "NotFound"
    case methodNotAllowed = "MethodNotAllowed"
    /// The object is managed by another writer, or changed since the version the request names.
    case conflict = "Conflict"
    case unsupported = "Unsupported"
    case payloadTooLarge = "PayloadTooLarge"
    case requestTimeout = "RequestTimeout"
    case unsupportedMediaType = "UnsupportedMediaType"
    /// The change could not be saved, so it was not made.
    case stateNotSaved = "StateNotSaved"
    /// A sink's destination did not answer (redelivery).
    case sinkUnavailable = "SinkUnavailable"
    /// A watch asked for changes older than the server keeps: list again, then watch.
    case expired = "Expired"
    case `internal` = "Internal"
}

public struct APIErrorBody: Sendable, Codable, Error {
    public struct Detail: Sendable, Codable {
        public var code: String
        public var message: String
        public var details: [SpecError]?
    }

    public var error: Detail

    public init(code: APIErrorCode, message: String, details: [SpecError]? = nil) {
        error = Detail(code: code.rawValue, message: message, details: details)
    }
}

/// The answer to `POST /v1/topics/{topic}/records`.
public struct ProduceResponse: Sendable, Codable {
    public var topic: String
    /// Records appended, over every partition.
    public var count: Int
    /// The partitions written, in order: keyed records go to their key's partition.
    public var partitions: [PartitionAppend]

    public init(topic: String, count: Int, partitions: [PartitionAppend]) {
        self.topic = topic
        self.count = count
        self.partitions = partitions
    }
}

/// The records one request appended to one partition: offsets `firstOffset ..< firstOffset + count`.
public struct PartitionAppend: Sendable, Codable, Equatable {
    public var partition: Int
    public var firstOffset: Int64
    public var count: Int

    public init(partition: Int, firstOffset: Int64, count: Int) {
        self.partition = partition
        self.firstOffset = firstOffset
        self.count = count
    }
}

/// One record as `GET /v1/topics/{topic}/records` returns it. Written and read with
/// Provision's own JSON, not Codable, so a decimal in a value keeps every stored digit.
public struct RecordView: Sendable, Equatable {
    public var partition: Int
    public var offset: Int64
    public var time: String
    public var key: String?
    /// The value as JSON when it parses as JSON, else as text; nil for a tombstone.
    public var value: JSONValue?
    public var headers: [String: String]?

    public init(partition: Int, offset: Int64, time: String, key: String?, value: JSONValue?, headers: [String: String]?) {
        self.partition = partition
        self.offset = offset
        self.time = time
        self.key = key
        self.value = value
        self.headers = headers
    }

    /// The record as a JSON object with its keys in sorted order.
    public var json: JSONValue {
        var fields: [(key: String, value: JSONValue)] = []
        if let headers {
            fields.append(("headers", .object(JSONObject(headers.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) }))))
        }
        // A null key and a tombstone's value are left out, not written as null.
        if let key { fields.append(("key", .string(key))) }
        fields.append(("offset", .integer(offset)))
        fields.append(("partition", .integer(Int64(partition))))
        fields.append(("time", .string(time)))
        if let value { fields.append(("value", value)) }
        return .object(JSONObject(fields))
    }

    public init?(json: JSONValue) {
        guard case .integer(let offset)? = json["offset"], case .string(let time)? = json["time"] else { return nil }
        var partition = 0
        if case .integer(let number)? = json["partition"] { partition = Int(number) }
        var key: String?
        if case .string(let text)? = json["key"] { key = text }
        var headers: [String: String]?
        if case .object(let object)? = json["headers"] {
            headers = [:]
            for field in object.fields { if case .string(let text) = field.value { headers?[field.key] = text } }
        }
        let value = json["value"].flatMap { $0.isNull ? nil : $0 }
        self.init(partition: partition, offset: offset, time: time, key: key, value: value, headers: headers)
    }
}

public struct RecordsPage: Sendable, Equatable {
    public var records: [RecordView]
    /// Where the next read of this partition continues.
    public var nextOffset: Int64
    public var endOffset: Int64
    /// How many partitions the topic has (each is read on its own: `?partition=N`).
    public var partitions: Int = 1

    public init(records: [RecordView], nextOffset: Int64, endOffset: Int64) {
        self.records = records
        self.nextOffset = nextOffset
        self.endOffset = endOffset
    }

    public var json: JSONValue {
        ["endOffset": .integer(endOffset), "nextOffset": .integer(nextOffset), "partitions": .integer(Int64(partitions)),
         "records": .array(records.map(\.json))]
    }

    public init?(json: JSONValue) {
        guard case .integer(let next)? = json["nextOffset"], case .integer(let end)? = json["endOffset"],
              case .array(let elements)? = json["records"]
        else { return nil }
        var records: [RecordView] = []
        for element in elements {
            guard let record = RecordView(json: element) else { return nil }
            records.append(record)
        }
        self.init(records: records, nextOffset: next, endOffset: end)
        if case .integer(let count)? = json["partitions"] { partitions = Int(count) }
    }
}

/// Embeds a JSON value as is inside a Codable document.
public struct JSONText: Sendable, Codable, Equatable {
    public var value: JSONValue

    public init(_ value: JSONValue) {
        self.value = value
    }

    public init(from decoder: Decoder) throws {
        value = try JSONText.decodeValue(try decoder.singleValueContainer(), decoder: decoder)
    }

    private static func decodeValue(_ container: SingleValueDecodingContainer, decoder: Decoder) throws -> JSONValue {
        if container.decodeNil() { return .null }
        if let flag = try? container.decode(Bool.self) { return .bool(flag) }
        if let integer = try? container.decode(Int64.self) { return .integer(integer) }
        if let number = try? container.decode(Double.self) { return .number(number) }
        if let text = try? container.decode(String.self) { return .string(text) }
        if let array = try? container.decode([JSONText].self) { return .array(array.map(\.value)) }
        let object = try decoder.container(keyedBy: AnyKey.self)
        var fields: [(key: String, value: JSONValue)] = []
        for key in object.allKeys {
            fields.append((key.stringValue, try object.decode(JSONText.self, forKey: key).value))
        }
        return .object(JSONObject(fields))
    }

    public func encode(to encoder: Encoder) throws {
        switch value {
        case .null:
            var container = encoder.singleValueContainer()
            try container.encodeNil()
        case .bool(let flag):
            var container = encoder.singleValueContainer()
            try container.encode(flag)
        case .integer(let integer):
            var container = encoder.singleValueContainer()
            try container.encode(integer)
        case .number(let number):
            var container = encoder.singleValueContainer()
            try container.encode(number)
        case .decimal(let number):
            // Codable has no exact decimal; the exact JSON form is `JSONWriter`'s.
            var container = encoder.singleValueContainer()
            try container.encode(number.doubleValue)
        case .string(let text):
            var container = encoder.singleValueContainer()
            try container.encode(text)
        case .array(let elements):
            var container = encoder.singleValueContainer()
            try container.encode(elements.map(JSONText.init))
        case .object(let object):
            var container = encoder.container(keyedBy: AnyKey.self)
            for field in object.fields {
                try container.encode(JSONText(field.value), forKey: AnyKey(stringValue: field.key))
            }
        }
    }
}

struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }

    init(stringValue: String) {
        self.stringValue = stringValue
    }

    init?(intValue: Int) {
        nil
    }
}

/// One line of `GET /v1/watch`: an object that changed, and the version of the change. A
/// watcher reads the object itself when it needs it, and resumes from the last version it saw.
public struct WatchEvent: Sendable, Equatable, Codable {
    public enum ChangeType: String, Sendable, Codable {
        case changed, deleted
    }

    public enum Kind: String, Sendable, Codable {
        case dataset = "Dataset"
        case dataProduct = "DataProduct"
        /// A product's status (phase, lag, counts) apart from its spec.
        case productStatus = "ProductStatus"
    }

    public var type: ChangeType
    public var kind: Kind
    public var name: String
    public var resourceVersion: String

    public init(type: ChangeType, kind: Kind, name: String, resourceVersion: String) {
        self.type = type
        self.kind = kind
        self.name = name
        self.resourceVersion = resourceVersion
    }
}

/// What a redelivery did (`POST /v1/products/{name}/redeliver`).
public struct RedeliveryResult: Sendable, Codable, Equatable {
    /// Dead letters sent to the sink again and accepted.
    public var redelivered: Int64
    /// Of those, how many were set aside again (they are appended to the dead-letter topic
    /// anew, so a later redelivery sees them).
    public var deadLetteredAgain: Int64

    public init(redelivered: Int64, deadLetteredAgain: Int64) {
        self.redelivered = redelivered
        self.deadLetteredAgain = deadLetteredAgain
    }
}
