import Foundation
import Hummingbird
import HummingbirdCore
import NIOCore
import Logging
import ProvisionControl
import ProvisionKafka
import ProvisionLog
import ProvisionModel
import ProvisionPipeline
import ProvisionServer
import ProvisionSinks
import ServiceLifecycle

/// The composition root: which event log, which control store and which sinks a server runs
/// on, and every service `serve` starts, wired in dependency order: the log, the reconciler, log
/// retention, any extra services, and the HTTP API last, so that it shuts down first and
/// the pipelines drain behind it.
public struct ProvisionServerRuntime: Sendable {
    public struct Options: Sendable {
        public var dataDirectory: String
        public var host: String
        public var port: Int
        public var fileRoot: String
        public var logConfiguration: EmbeddedLogConfiguration
        /// A connection that sends nothing for this long is closed: between requests, while a
        /// request's head arrives, and while its body does (a `Content-Length` larger than the
        /// body sent no longer holds a connection forever). A request being answered, such as
        /// a long poll, is not cut.
        public var httpIdleTimeout: Duration = .seconds(30)
        /// How many records a pipeline reads and writes per batch, at most.
        public var batchRecordsMax = Pipeline.Limits().batchRecordsMax
        /// Requests need a token (off: `--dev` and `--demo`).
        public var authenticating = true
        /// The first admin token's secret (`PROVISION_ADMIN_TOKEN`); without one, a server
        /// with no admin token makes one and writes it to `adminTokenPath`.
        public var adminTokenSecret: String?
        public var adminTokenPath: String { "\(dataDirectory)/admin-token" }
        /// Where sinks may connect (`serve --allow-destination`); nil: anywhere but this server.
        public var allowedDestinations: [SinkDestinationPolicy.Entry]?
        /// The key team secrets are sealed with: base64 of 32 bytes (`PROVISION_SECRET_KEY`), or
        /// nil for the one in `secretKeyPath`, made on first start.
        public var secretKey: String?
        public var secretKeyPath: String { "\(dataDirectory)/secret-key" }
        /// A git source applied at start (`serve --gitops`), beside those applied as specs.
        public var gitSource: GitSource?
        /// The event store: nil for the embedded log in the data directory, else Kafka's
        /// brokers (`serve --store kafka://HOST:PORT[,HOST:PORT…][?PROPERTY=VALUE&…]`).
        public var kafka: KafkaStoreAddress?

        public init(dataDirectory: String, host: String, port: Int, fileRoot: String?,
                    logConfiguration: EmbeddedLogConfiguration = .init())
        {
            self.dataDirectory = dataDirectory
            self.host = host
            self.port = port
            self.fileRoot = fileRoot ?? "\(dataDirectory)/files"
            self.logConfiguration = logConfiguration
        }
    }

    public let options: Options
    public let log: any EventLog
    /// The embedded log, when it is the store: retention applies to it.
    let embeddedLog: EmbeddedEventLog?
    public let reconciler: Reconciler
    public let logger: Logger

    public init(options: Options, logger: Logger) async throws {
        self.options = options
        self.logger = logger
        // On Kafka nothing else makes it, and the secret key and admin token are written here.
        try FileManager.default.createDirectory(atPath: options.dataDirectory, withIntermediateDirectories: true)
        if let kafka = options.kafka {
            log = try KafkaEventLog(bootstrapServers: kafka.bootstrapServers, options: kafka.properties)
            embeddedLog = nil
        } else {
            let embedded = try EmbeddedEventLog(directory: "\(options.dataDirectory)/log", configuration: options.logConfiguration, logger: logger)
            log = embedded
            embeddedLog = embedded
        }
        // On Kafka the control objects and the sinks' checkpoints live in compacted topics
        // beside the datasets, so a server on an empty data directory resumes from the brokers.
        let checkpoints: any CheckpointStore
        let store: any ControlStore
        if let kafka = options.kafka {
            store = try await LogControlStore(log: log, topic: kafka.controlTopic)
            checkpoints = try await LogCheckpointStore(log: log, topic: kafka.checkpointTopic)
        } else {
            store = try Reconciler.openEmbeddedStore(directory: "\(options.dataDirectory)/control", logger: logger)
            checkpoints = try FileCheckpointStore(directory: "\(options.dataDirectory)/checkpoints")
        }
        try FileManager.default.createDirectory(atPath: options.fileRoot, withIntermediateDirectories: true)
        let sealer: SecretSealer
        if let key = options.secretKey {
            guard let bytes = Data(base64Encoded: key), bytes.count == 32 else { throw SecretKeyUnreadable(path: "PROVISION_SECRET_KEY") }
            sealer = SecretSealer(key: .init(data: bytes))
        } else {
            sealer = try SecretSealer.loadOrCreate(at: options.secretKeyPath)
        }
        // The server's own API is never a destination: listening on every address, any of
        // the machine's addresses at its port is it.
        let listening = NetworkAddress.resolve(options.host)
        let destinations = SinkDestinationPolicy(allowed: options.allowedDestinations, serverPort: options.port,
                                                 serverAddresses: listening.contains(where: \.isUnspecified) || listening.isEmpty ? nil : listening)
        if options.allowedDestinations == nil {
            logger.warning("sinks may connect anywhere but this server: restrict them with --allow-destination HOST|CIDR")
        }
        reconciler = try await Reconciler(log: log, store: store,
                                    sinks: SinkFactory(fileRoot: options.fileRoot, checkpoints: checkpoints, destinations: destinations,
                                                       logger: logger),
                                    configuration: .init(pipelineLimits: .init(batchRecordsMax: options.batchRecordsMax)),
                                    secretSealer: sealer, logger: logger)
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully and returns.
    /// Makes sure an admin can reach the server: the admin token is `PROVISION_ADMIN_TOKEN`'s
    /// secret, or, the first time, a new one written to `admin-token` in the data directory
    /// (readable by its owner only). Returns where a new one was written.
    public func prepareAdminToken() async throws -> String? {
        guard options.authenticating else { return nil }
        if let secret = options.adminTokenSecret {
            try await reconciler.ensureAdminToken(secret: secret)
            return nil
        }
        guard await !reconciler.hasAdminToken else { return nil }
        let secret = Reconciler.newSecret()
        let path = options.adminTokenPath
        guard FileManager.default.createFile(atPath: path, contents: Data((secret + "\n").utf8), attributes: [.posixPermissions: 0o600])
        else { throw POSIXError(.EACCES) }
        try await reconciler.ensureAdminToken(secret: secret)
        return path
    }

    public func run(extraServices: [any Service] = [], onReady: @escaping @Sendable () async -> Void = {}) async throws {
        var api = APIRouter(reconciler: reconciler, authenticating: options.authenticating)
        let metrics = ProductMetrics.shared
        let reconciler = self.reconciler
        let gitOps = GitOpsService(reconciler: reconciler, dataDirectory: options.dataDirectory, shorthand: options.gitSource, logger: logger)
        api.gitSources = gitOps
        api.metrics = { await metrics.scrape(reconciler) }
        let router = api.build()
        let application = Application(
            router: router,
            server: .http1(configuration: .init(idleTimeout: TimeAmount(options.httpIdleTimeout))),
            configuration: .init(address: .hostname(options.host, port: options.port), serverName: "provision"),
            onServerRunning: { _ in await onReady() },
            logger: logger)
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: reconciler)]
        // Kafka applies its topics' own retention.
        if let embeddedLog { services.append(.init(service: RetentionService(log: embeddedLog, reconciler: reconciler, logger: logger))) }
        services.append(.init(service: gitOps))
        services += extraServices.map { .init(service: $0) }
        services.append(.init(service: application))
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint],
                                                      logger: logger))
        try await group.run()
    }
}

/// Applies the log's retention limits once a minute.
struct RetentionService: Service {
    let log: EmbeddedEventLog
    let reconciler: Reconciler
    let logger: Logger

    func run() async throws {
        while !Task.isCancelledOrShuttingDown {
            do {
                // Read after the products' positions: a record appended meanwhile is above them.
                let unread = try await reconciler.unreadOffsets()
                let removed = try log.enforceRetention(now: Reconciler.systemClock(), unreadFrom: unread)
                if removed > 0 { logger.info("retention removed segments", metadata: ["segments": "\(removed)"]) }
            } catch {
                logger.error("retention failed", metadata: ["error": "\(error)"])
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(60)) }
        }
    }
}

extension Task where Success == Never, Failure == Never {
    static var isCancelledOrShuttingDown: Bool { Task.isCancelled || Task.isShuttingDownGracefully }
}

/// Where Kafka is: `kafka://HOST:PORT[,HOST:PORT…][?PROPERTY=VALUE&…]`, the properties
/// librdkafka's (`security.protocol=SSL`, …) for every client the log makes.
///
/// One property is Provision's own: `provision.cluster=NAME` names the group of servers whose
/// control objects and checkpoints live in `_provision.NAME.control` and
/// `_provision.NAME.checkpoints` (without it, `_provision.control` and
/// `_provision.checkpoints`), as Kafka Connect's group names its storage topics: servers of
/// different groups share the datasets and keep their products apart.
public struct KafkaStoreAddress: Sendable, Equatable {
    public var bootstrapServers: String
    /// librdkafka's.
    public var properties: [String: String]
    public var cluster: String?

    public var controlTopic: String { cluster.map { "_provision.\($0).control" } ?? LogControlStore.defaultTopic }
    public var checkpointTopic: String { cluster.map { "_provision.\($0).checkpoints" } ?? LogCheckpointStore.defaultTopic }

    public init?(_ url: String) {
        guard url.hasPrefix("kafka://") else { return nil }
        let rest = url.dropFirst("kafka://".count)
        let parts = rest.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let servers = parts[0].split(separator: ",").map { String($0) }
        guard !servers.isEmpty, servers.allSatisfy({ server in
            guard let colon = server.lastIndex(of: ":"), let port = Int(server[server.index(after: colon)...]) else { return false }
            return colon > server.startIndex && (1...65535).contains(port)
        }) else { return nil }
        bootstrapServers = servers.joined(separator: ",")
        properties = [:]
        if parts.count == 2 {
            for pair in parts[1].split(separator: "&") {
                let nameAndValue = pair.split(separator: "=", maxSplits: 1)
                guard nameAndValue.count == 2 else { return nil }
                properties[String(nameAndValue[0]).removingPercentEncoding ?? String(nameAndValue[0])] =
                    String(nameAndValue[1]).removingPercentEncoding ?? String(nameAndValue[1])
            }
        }
        if let cluster = properties.removeValue(forKey: "provision.cluster") {
            guard TopicName.isValid("_provision.\(cluster).checkpoints"), !cluster.contains(".") else { return nil }
            self.cluster = cluster
        }
    }
}
