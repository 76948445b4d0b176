import Foundation

/// The kinds of document a spec file may hold.
public enum SpecKind: String, Sendable, Codable, CaseIterable {
    case dataset = "Dataset"
    case dataProduct = "DataProduct"
    case gitSource = "GitSource"
}

public struct ObjectMetadata: Sendable, Equatable, Codable {
    /// `disabled` on a product: a git source that no longer lists it keeps it.
    public static let pruneAnnotation = "provision/prune"

    public var prunes: Bool { annotations?[Self.pruneAnnotation] != "disabled" }

    public var name: String
    public var team: String?
    public var owner: String?
    public var description: String?
    public var labels: [String: String]?
    /// Instructions to the control plane about the object, not part of what it produces:
    /// `provision/prune: disabled` keeps a product its git source no longer lists.
    public var annotations: [String: String]?
    /// As submitted: apply only if the stored object is still at this version (optimistic
    /// concurrency); never stored.
    public var resourceVersion: String?

    public init(name: String, team: String? = nil, owner: String? = nil, description: String? = nil,
                labels: [String: String]? = nil, annotations: [String: String]? = nil, resourceVersion: String? = nil)
    {
        self.annotations = annotations
        self.resourceVersion = resourceVersion
        self.name = name
        self.team = team
        self.owner = owner
        self.description = description
        self.labels = labels
    }
}

/// A discoverable stream in the catalog.
public struct Dataset: Sendable, Equatable, Codable {
    public var metadata: ObjectMetadata
    public var spec: DatasetSpec

    public init(metadata: ObjectMetadata, spec: DatasetSpec) {
        self.metadata = metadata
        self.spec = spec
    }

    public var name: String { metadata.name }
}

public struct DatasetSpec: Sendable, Equatable, Codable {
    public var topic: String
    /// The field that identifies an entity; records with the same key are versions of it.
    public var key: String?
    /// The event-time field; when absent, the log timestamp is the event time.
    public var time: String?
    public var schema: Schema
    /// How many partitions the topic gets when Provision creates it (nil: one). An existing
    /// topic keeps its own count; a record's partition follows from its key
    /// (`KafkaPartitioner`), so the count cannot change once records are in it.
    public var partitions: Int?
    /// The topic keeps only each key's latest record (Kafka's `cleanup.policy=compact`), for a
    /// table whose history no product needs: it needs a key, takes no record without one,
    /// and is joined by its current rows (`mode: latest`), never as of a time or in a window,
    /// whose answers would depend on when the broker last compacted it. Set when Provision
    /// creates the topic; an existing topic keeps its own policy.
    public var compacted: Bool?

    /// The most partitions a dataset's topic may have.
    public static let partitionsMax = 1_024

    /// The spec without what does not change the records products read (`pii` marks).
    public var recordShape: DatasetSpec {
        var shape = self
        shape.schema = schema.withoutPII
        return shape
    }

    public init(topic: String, key: String? = nil, time: String? = nil, schema: Schema, partitions: Int? = nil, compacted: Bool? = nil) {
        self.topic = topic
        self.key = key
        self.time = time
        self.schema = schema
        self.partitions = partitions
        self.compacted = compacted
    }

    /// Whether its topic is (to be) compacted.
    public var isCompacted: Bool { compacted ?? false }
}

/// A dataset delivered somewhere, in a shape, from a point in history.
public struct DataProduct: Sendable, Equatable, Codable {
    public var metadata: ObjectMetadata
    public var spec: DataProductSpec

    public init(metadata: ObjectMetadata, spec: DataProductSpec) {
        self.metadata = metadata
        self.spec = spec
    }

    public var name: String { metadata.name }
}

public struct DataProductSpec: Sendable, Equatable, Codable {
    public var from: String
    public var backfill: Backfill
    public var filter: String?
    public var select: [SelectField]?
    public var key: String?
    public var sink: SinkSpec
    public var deletionPolicy: DeletionPolicy
    /// Datasets joined to each source event, in order.
    public var joins: [JoinSpec]

    public init(from: String, backfill: Backfill = .all, filter: String? = nil, select: [SelectField]? = nil,
                key: String? = nil, sink: SinkSpec, deletionPolicy: DeletionPolicy = .retain, joins: [JoinSpec] = [])
    {
        self.from = from
        self.backfill = backfill
        self.filter = filter
        self.select = select
        self.key = key
        self.sink = sink
        self.deletionPolicy = deletionPolicy
        self.joins = joins
    }

    enum CodingKeys: String, CodingKey {
        case from, backfill, filter = "where", select, key, sink, deletionPolicy, joins = "join"
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        from = try container.decode(String.self, forKey: .from)
        backfill = try container.decode(Backfill.self, forKey: .backfill)
        filter = try container.decodeIfPresent(String.self, forKey: .filter)
        select = try container.decodeIfPresent([SelectField].self, forKey: .select)
        key = try container.decodeIfPresent(String.self, forKey: .key)
        sink = try container.decode(SinkSpec.self, forKey: .sink)
        deletionPolicy = try container.decode(DeletionPolicy.self, forKey: .deletionPolicy)
        // Stored before joins existed: no joins.
        joins = try container.decodeIfPresent([JoinSpec].self, forKey: .joins) ?? []
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(from, forKey: .from)
        try container.encode(backfill, forKey: .backfill)
        try container.encodeIfPresent(filter, forKey: .filter)
        try container.encodeIfPresent(select, forKey: .select)
        try container.encodeIfPresent(key, forKey: .key)
        try container.encode(sink, forKey: .sink)
        try container.encode(deletionPolicy, forKey: .deletionPolicy)
        if !joins.isEmpty { try container.encode(joins, forKey: .joins) }
    }

    /// How the output must change when this spec is replaced by `next`.
    public func outputChange(to next: DataProductSpec) -> OutputChange {
        guard from != next.from || backfill != next.backfill || filter != next.filter || select != next.select
            || key != next.key || sink != next.sink || joins != next.joins
        else { return .none }
        if from == next.from, backfill == next.backfill, filter == next.filter, key == next.key, sink == next.sink,
           joins == next.joins,
           let select, let nextSelect = next.select, nextSelect.count > select.count,
           select.allSatisfy(nextSelect.contains)
        {
            return .addsFields
        }
        return .rebuild
    }
}

/// What a spec change does to a product's output.
public enum OutputChange: Sendable, Equatable {
    /// Same records, same fields (a policy change, say).
    case none
    /// Same records and fields, plus new fields: existing output can be extended in place.
    case addsFields
    /// Different records or different fields: the output is built again from history.
    case rebuild
}

/// A dataset joined to each source event. With `within` it is a windowed stream–stream
/// join; otherwise the dataset is read as a table (newest value per key).
public struct JoinSpec: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        /// Events with no match are dropped.
        case inner
        /// Events with no match are kept, with the joined fields null.
        case left
    }

    public enum Mode: String, Sendable, Codable, CaseIterable {
        /// The table row as of the event's time: history and live give the same answer.
        case asOf
        /// The current table row; when it changes, the outputs that joined it are sent again.
        case latest
    }

    public static let defaultMaxDelayMilliseconds: Int64 = 5_000
    public static let defaultIdleTimeoutMilliseconds: Int64 = 2_000

    public var dataset: String
    /// The source event's field matched against the table's key (or, windowed, the
    /// joined events' field of the same name).
    public var on: String
    /// The name the joined record has in `where` and `select`: `customer.name`.
    public var alias: String
    public var kind: Kind
    public var mode: Mode
    /// Set for a windowed join: the largest difference between the two event times.
    public var withinMilliseconds: Int64?
    /// How long a live event waits for the joined input to reach its time; for a windowed
    /// join, the grace period in stream time after a window's end.
    public var maxDelayMilliseconds: Int64
    /// A windowed join: how long (wall clock) one input waits for the other when only one
    /// has records, and after which a quiet join moves stream time to the wall clock so its
    /// windows close. Nil for the default.
    public var idleTimeoutMilliseconds: Int64?

    public var effectiveIdleTimeoutMilliseconds: Int64 { idleTimeoutMilliseconds ?? Self.defaultIdleTimeoutMilliseconds }

    public init(dataset: String, on: String, alias: String, kind: Kind = .left, mode: Mode = .asOf,
                withinMilliseconds: Int64? = nil, maxDelayMilliseconds: Int64 = JoinSpec.defaultMaxDelayMilliseconds,
                idleTimeoutMilliseconds: Int64? = nil)
    {
        self.idleTimeoutMilliseconds = idleTimeoutMilliseconds
        self.dataset = dataset
        self.on = on
        self.alias = alias
        self.kind = kind
        self.mode = mode
        self.withinMilliseconds = withinMilliseconds
        self.maxDelayMilliseconds = maxDelayMilliseconds
    }

    public var isWindowed: Bool { withinMilliseconds != nil }

    /// A `latest` table join: its output follows the table, so events are sent again when
    /// a row they joined changes. (`mode` means nothing to a windowed join.)
    public var followsRowChanges: Bool { !isWindowed && mode == .latest }

    enum CodingKeys: String, CodingKey {
        case dataset, on, alias = "as", kind = "type", mode, withinMilliseconds = "within", maxDelayMilliseconds = "maxDelay"
        case idleTimeoutMilliseconds = "idleTimeout"
    }
}

public struct SelectField: Sendable, Equatable, Codable {
    public var name: String
    public var expression: String

    public init(name: String, expression: String) {
        self.name = name
        self.expression = expression
    }
}

/// How far back the output starts.
public enum Backfill: Sendable, Equatable, Codable {
    /// All retained history.
    case all
    /// No history: only records appended after the product starts.
    case none
    /// History newer than this many milliseconds before the product was created.
    case since(text: String, milliseconds: Int64)
    /// History from an instant, optionally until another.
    case window(from: TimestampMilliseconds, until: TimestampMilliseconds?)

    /// The first event time the product includes, given when it was (re)built; nil for all.
    public func startTime(createdAt: TimestampMilliseconds) -> TimestampMilliseconds? {
        switch self {
        case .all: return nil
        case .none: return createdAt
        case .since(_, let milliseconds): return createdAt - milliseconds
        case .window(let from, _): return from
        }
    }

    public var endTime: TimestampMilliseconds? {
        if case .window(_, let until) = self { return until }
        return nil
    }

    private enum CodingKeys: String, CodingKey { case since, from, until, mode }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        if let since = try container.decodeIfPresent(String.self, forKey: .since),
            let milliseconds = DurationText.parseMilliseconds(since)
        {
            self = .since(text: since, milliseconds: milliseconds)
        } else if let from = try container.decodeIfPresent(String.self, forKey: .from), let start = Timestamp.parse(from) {
            let until = try container.decodeIfPresent(String.self, forKey: .until).flatMap(Timestamp.parse)
            self = .window(from: start, until: until)
        } else if try container.decodeIfPresent(String.self, forKey: .mode) == "none" {
            self = .none
        } else {
            self = .all
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .all: try container.encode("all", forKey: .mode)
        case .none: try container.encode("none", forKey: .mode)
        case .since(let text, _): try container.encode(text, forKey: .since)
        case .window(let from, let until):
            try container.encode(Timestamp.format(from), forKey: .from)
            try container.encodeIfPresent(until.map(Timestamp.format), forKey: .until)
        }
    }
}

public enum DeletionPolicy: String, Sendable, Equatable, Codable {
    case retain = "Retain"
    case delete = "Delete"
}

/// Where a product's output goes. One case per sink kind.
public enum SinkSpec: Sendable, Equatable, Codable {
    case file(FileSinkSpec)
    case postgres(PostgresSinkSpec)
    case elasticsearch(ElasticsearchSinkSpec)
    case webhook(WebhookSinkSpec)

    public static let kinds = ["file", "postgres", "elasticsearch", "webhook"]

    public var kind: String {
        switch self {
        case .file: return "file"
        case .postgres: return "postgres"
        case .elasticsearch: return "elasticsearch"
        case .webhook: return "webhook"
        }
    }

    private enum CodingKeys: String, CodingKey { case file, postgres, elasticsearch, webhook }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        if let postgres = try container.decodeIfPresent(PostgresSinkSpec.self, forKey: .postgres) {
            self = .postgres(postgres)
        } else if let elasticsearch = try container.decodeIfPresent(ElasticsearchSinkSpec.self, forKey: .elasticsearch) {
            self = .elasticsearch(elasticsearch)
        } else if let webhook = try container.decodeIfPresent(WebhookSinkSpec.self, forKey: .webhook) {
            self = .webhook(webhook)
        } else {
            self = .file(try container.decode(FileSinkSpec.self, forKey: .file))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .file(let file): try container.encode(file, forKey: .file)
        case .postgres(let postgres): try container.encode(postgres, forKey: .postgres)
        case .elasticsearch(let elasticsearch): try container.encode(elasticsearch, forKey: .elasticsearch)
        case .webhook(let webhook): try container.encode(webhook, forKey: .webhook)
        }
    }
}

/// An Elasticsearch (or OpenSearch) index behind an alias. The URL is a `ValueReference` or an
/// `http(s)://` URL; credentials are always references.
public struct ElasticsearchSinkSpec: Sendable, Equatable, Codable {
    public enum Auth: Sendable, Equatable {
        /// a `ValueReference` holding `user:password`.
        case basic(String)
        /// a `ValueReference` holding an API key (the base64 `id:key` Elasticsearch returns).
        case apiKey(String)

        public var reference: String {
            switch self {
            case .basic(let reference), .apiKey(let reference): return reference
            }
        }
    }

    public var url: String
    /// The alias readers use; the product writes to `<index>-<build>` behind it.
    public var index: String
    public var auth: Auth?
    /// String fields mapped as full text (`text`) rather than exact values (`keyword`).
    public var text: [String]

    public init(url: String, index: String, auth: Auth? = nil, text: [String] = []) {
        self.url = url
        self.index = index
        self.auth = auth
        self.text = text
    }

    /// The name of the environment variable the URL comes from, if it is a reference.
    public var urlReference: ValueReference? { ValueReference.parse(url) }

    /// The URL as written, with any password replaced, for status, logs and API output.
    public var redactedURL: String { PostgresURL.redact(url) }

    private enum CodingKeys: String, CodingKey { case url, index, auth, text }
    private enum AuthKeys: String, CodingKey { case basic, apiKey }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        url = try container.decode(String.self, forKey: .url)
        index = try container.decode(String.self, forKey: .index)
        text = try container.decodeIfPresent([String].self, forKey: .text) ?? []
        if container.contains(.auth) {
            let auth = try container.nestedContainer(keyedBy: AuthKeys.self, forKey: .auth)
            if let basic = try auth.decodeIfPresent(String.self, forKey: .basic) {
                self.auth = .basic(basic)
            } else {
                self.auth = .apiKey(try auth.decode(String.self, forKey: .apiKey))
            }
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(redactedURL, forKey: .url)
        try container.encode(index, forKey: .index)
        if !text.isEmpty { try container.encode(text, forKey: .text) }
        if let auth {
            var nested = container.nestedContainer(keyedBy: AuthKeys.self, forKey: .auth)
            switch auth {
            case .basic(let reference): try nested.encode(reference, forKey: .basic)
            case .apiKey(let reference): try nested.encode(reference, forKey: .apiKey)
            }
        }
    }
}

/// A function behind an HTTP endpoint: records are POSTed to it in signed batches.
/// How a webhook's requests are signed.
public enum WebhookSigning: String, Sendable, Equatable, Codable, CaseIterable {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp` and `webhook-signature:
    /// v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, with a `whsec_<base64>` secret.
    case standard
    /// `Provision-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`, as before.
    case provision
}

/// What a webhook request's body is.
public enum WebhookFormat: String, Sendable, Equatable, Codable, CaseIterable {
    /// `{"product", "records": [{"id", "key", "partition", "offset", "time", "value"}]}`.
    case provision
    /// A CloudEvents 1.0 batch (`application/cloudevents-batch+json`): an event per record.
    case cloudevents
    /// One record per request as a CloudEvents binary-mode event (`ce-*` headers, the value
    /// as the body), for runtimes that take single events only.
    case cloudeventsBinary = "cloudevents-binary"
}

public struct WebhookSinkSpec: Sendable, Equatable, Codable {
    public struct Batch: Sendable, Equatable, Codable {
        public var maxRecords: Int
        public var maxBytes: Int
        /// How long a partly filled batch may wait for more records, in milliseconds.
        public var lingerMilliseconds: Int64

        public init(maxRecords: Int = 100, maxBytes: Int = 1 << 20, lingerMilliseconds: Int64 = 50) {
            self.maxRecords = maxRecords
            self.maxBytes = maxBytes
            self.lingerMilliseconds = lingerMilliseconds
        }
    }

    public struct Retry: Sendable, Equatable, Codable {
        public var maxAttempts: Int
        public var initialBackoffMilliseconds: Int64
        public var maxBackoffMilliseconds: Int64
        /// How long the endpoint may accept nothing before the product stalls
        /// (`EndpointUnavailable`) instead of dead-lettering what it cannot deliver.
        public var unavailableAfterMilliseconds: Int64

        public init(maxAttempts: Int = 8, initialBackoffMilliseconds: Int64 = 200, maxBackoffMilliseconds: Int64 = 30_000,
                    unavailableAfterMilliseconds: Int64 = 60_000)
        {
            self.maxAttempts = maxAttempts
            self.initialBackoffMilliseconds = initialBackoffMilliseconds
            self.maxBackoffMilliseconds = maxBackoffMilliseconds
            self.unavailableAfterMilliseconds = unavailableAfterMilliseconds
        }
    }

    /// `http(s)://…` or a `ValueReference`.
    public var url: String
    public var batch: Batch
    public var timeoutMilliseconds: Int64
    public var retry: Retry
    /// a `ValueReference` holding the key batches are signed with (HMAC-SHA256).
    public var secret: String?
    /// While receivers move to a new `secret`, the one being retired (written as the second
    /// of `secret: [NEW, OLD]`): every request carries a signature with each.
    public var previousSecret: String?
    /// How requests are signed. Nil in a product stored before signing could be chosen:
    /// those keep `provision`; a new product without `signing:` gets `standard`.
    public var signing: WebhookSigning?
    /// What a request's body is; nil is `provision`.
    public var format: WebhookFormat?
    /// Extra request headers; values may be a `ValueReference` references.
    public var headers: [String: String]

    public var effectiveSigning: WebhookSigning { signing ?? .provision }
    public var effectiveFormat: WebhookFormat { format ?? .provision }

    public init(url: String, batch: Batch = .init(), timeoutMilliseconds: Int64 = 10_000, retry: Retry = .init(),
                secret: String? = nil, headers: [String: String] = [:])
    {
        self.url = url
        self.batch = batch
        self.timeoutMilliseconds = timeoutMilliseconds
        self.retry = retry
        self.secret = secret
        self.headers = headers
    }

    /// The URL as written, with any password replaced.
    public var redactedURL: String { PostgresURL.redact(url) }
}

/// A value a spec names instead of writing it: `${secret:NAME}`, a secret an admin or editor
/// stored for the product's team, or `${env:NAME}`, a variable of the server's environment
/// (for a team, only `PROVISION_TEAM_<TEAM>_…` ones). Credentials and URLs that carry them
/// are written this way so that a spec never holds them.
public enum ValueReference: Sendable, Hashable, CustomStringConvertible {
    case environment(String)
    case secret(String)

    /// The reference `text` is, if it is exactly one.
    public static func parse(_ text: String) -> ValueReference? {
        guard text.hasSuffix("}") else { return nil }
        for (prefix, make) in [("${env:", ValueReference.environment), ("${secret:", ValueReference.secret)] where text.hasPrefix(prefix) {
            let name = String(text.dropFirst(prefix.count).dropLast())
            guard isValidName(name) else { return nil }
            return make(name)
        }
        return nil
    }

    /// Letters, digits, `_`, `-` and `.`, at most 253 of them.
    public static func isValidName(_ name: String) -> Bool {
        (1...253).contains(name.utf8.count) && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "_-.".contains($0)) }
    }

    public var name: String {
        switch self {
        case .environment(let name), .secret(let name): return name
        }
    }

    public var description: String {
        switch self {
        case .environment(let name): return "${env:\(name)}"
        case .secret(let name): return "${secret:\(name)}"
        }
    }
}

/// A table in a PostgreSQL database. The URL is either `${env:NAME}`, resolved by the server
/// so that credentials never sit in a spec, or a `postgres://` URL.
public struct PostgresSinkSpec: Sendable, Equatable, Codable {
    public var url: String
    public var table: String
    public var schema: String

    public init(url: String, table: String, schema: String = "public") {
        self.url = url
        self.table = table
        self.schema = schema
    }

    /// The reference the URL comes from, if it is one.
    public var urlReference: ValueReference? { ValueReference.parse(url) }

    /// The URL as written, with any password replaced, for status, logs and API output.
    public var redactedURL: String { PostgresURL.redact(url) }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(redactedURL == url ? url : redactedURL, forKey: .url)
        try container.encode(table, forKey: .table)
        try container.encode(schema, forKey: .schema)
    }

    private enum CodingKeys: String, CodingKey { case url, table, schema }
}

/// Parsing and redaction of `postgres://user:password@host:port/database` URLs.
public enum PostgresURL {
    public struct Parts: Sendable, Equatable {
        public var user: String
        public var password: String?
        public var host: String
        public var port: Int
        public var database: String?
        /// `sslmode` from the query string, as libpq spells it (`disable`, `prefer`,
        /// `require`, `verify-ca`, `verify-full`); nil when absent.
        public var sslMode: String?
    }

    public static func parse(_ text: String) -> Parts? {
        guard text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") else { return nil }
        var rest = Substring(text[text.range(of: "://")!.upperBound...])
        var sslMode: String?
        if let query = rest.firstIndex(of: "?") {
            for parameter in rest[rest.index(after: query)...].split(separator: "&") {
                let pair = parameter.split(separator: "=", maxSplits: 1)
                if pair.count == 2, pair[0] == "sslmode" { sslMode = String(pair[1]) }
            }
            rest = rest[..<query]
        }
        var userInfo: Substring = ""
        if let at = rest.lastIndex(of: "@") {
            userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
        }
        var database: String?
        if let slash = rest.firstIndex(of: "/") {
            let name = rest[rest.index(after: slash)...]
            database = name.isEmpty ? nil : String(name).removingPercentEncoding
            rest = rest[..<slash]
        }
        var host = String(rest), port = 5432
        if let colon = rest.lastIndex(of: ":") {
            guard let parsed = Int(rest[rest.index(after: colon)...]) else { return nil }
            host = String(rest[..<colon])
            port = parsed
        }
        guard !host.isEmpty else { return nil }
        var user = "postgres", password: String?
        if !userInfo.isEmpty {
            if let colon = userInfo.firstIndex(of: ":") {
                user = String(userInfo[..<colon]).removingPercentEncoding ?? ""
                password = String(userInfo[userInfo.index(after: colon)...]).removingPercentEncoding
            } else {
                user = String(userInfo).removingPercentEncoding ?? ""
            }
        }
        return Parts(user: user, password: password, host: host, port: port, database: database, sslMode: sslMode)
    }

    /// `postgres://app:secret@db:5432/x` → `postgres://app:***@db:5432/x`.
    public static func redact(_ text: String) -> String {
        guard let scheme = text.range(of: "://"), let at = text[scheme.upperBound...].lastIndex(of: "@") else { return text }
        let userInfo = text[scheme.upperBound..<at]
        guard let colon = userInfo.firstIndex(of: ":") else { return text }
        return String(text[..<colon]) + ":***" + String(text[at...])
    }
}

public struct FileSinkSpec: Sendable, Equatable, Codable {
    public enum Format: String, Sendable, Codable, CaseIterable {
        case jsonl, csv
    }

    /// Relative to the server's file root.
    public var path: String
    public var format: Format

    public init(path: String, format: Format) {
        self.path = path
        self.format = format
    }
}

/// One document of a spec file, as parsed.
public enum SpecDocument: Sendable, Equatable {
    case dataset(Dataset, SourceLocation)
    case dataProduct(DataProduct, SourceLocation)
    case gitSource(GitSource, SourceLocation)

    public var kind: SpecKind {
        switch self {
        case .dataset: return .dataset
        case .dataProduct: return .dataProduct
        case .gitSource: return .gitSource
        }
    }

    public var name: String {
        switch self {
        case .dataset(let dataset, _): return dataset.name
        case .dataProduct(let product, _): return product.name
        case .gitSource(let source, _): return source.name
        }
    }

    public var location: SourceLocation {
        switch self {
        case .dataset(_, let location), .dataProduct(_, let location), .gitSource(_, let location): return location
        }
    }
}

/// A git repository whose specs the server follows: every interval it fetches the ref, reads
/// every spec under the path and applies the revision as `gitops:<name>`, for the source's team.
public struct GitSource: Sendable, Equatable, Codable {
    public var metadata: ObjectMetadata
    public var spec: GitSourceSpec

    public init(metadata: ObjectMetadata, spec: GitSourceSpec) {
        self.metadata = metadata
        self.spec = spec
    }

    public var name: String { metadata.name }
    /// The writer its objects are managed by.
    public var writer: String { "gitops:\(name)" }

    /// `URL`, `URL#REF` or `URL#REF:PATH` (`serve --gitops`): a source no team owns, whose
    /// specs name their teams.
    public static func shorthand(_ text: String, name: String, intervalMilliseconds: Int64) -> GitSource? {
        guard !text.isEmpty else { return nil }
        var url = text
        var ref = "main"
        var path = ""
        if let hash = text.lastIndex(of: "#") {
            url = String(text[..<hash])
            let rest = text[text.index(after: hash)...]
            let parts = rest.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            if !parts[0].isEmpty { ref = String(parts[0]) }
            if parts.count == 2 { path = String(parts[1]) }
        }
        guard !url.isEmpty else { return nil }
        return GitSource(metadata: ObjectMetadata(name: name),
                         spec: GitSourceSpec(url: url, ref: ref, path: path, intervalMilliseconds: intervalMilliseconds))
    }
}

public struct GitSourceSpec: Sendable, Equatable, Codable {
    /// What a sync does with a change made outside git to an object the source manages.
    public enum DriftPolicy: String, Sendable, Codable, CaseIterable {
        /// The next sync puts git's version back, and reports what it reverted.
        case revert
        /// The next sync reports the difference and leaves the object as it was changed.
        case detect
    }

    /// Anything `git` fetches: a path, `file://`, `git://`, `http(s)://`; never credentials.
    public var url: String
    /// A branch, tag or commit.
    public var ref: String
    /// The directory of the repository whose spec files (`.yaml`, `.yml`, recursively) are read; empty: all of it.
    public var path: String
    public var intervalMilliseconds: Int64
    public var driftPolicy: DriftPolicy
    /// A revision that deletes more than this share of the source's products waits for approval.
    public var pruneLimitPercent: Int
    /// HTTP credentials, as references: sent as basic authentication, never in the URL.
    public var username: String?
    public var password: String?

    public init(url: String, ref: String = "main", path: String = "", intervalMilliseconds: Int64 = 60_000,
                driftPolicy: DriftPolicy = .revert, pruneLimitPercent: Int = 50, username: String? = nil, password: String? = nil)
    {
        self.url = url
        self.ref = ref
        self.path = path
        self.intervalMilliseconds = intervalMilliseconds
        self.driftPolicy = driftPolicy
        self.pruneLimitPercent = pruneLimitPercent
        self.username = username
        self.password = password
    }

    /// The references it makes, by field (`credentials.password`).
    public var references: [(path: String, reference: ValueReference)] {
        [("credentials.username", username), ("credentials.password", password)].compactMap { path, text in
            text.flatMap(ValueReference.parse).map { (path, $0) }
        }
    }
}
