import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import ProvisionControl
import ProvisionLog
import ProvisionModel
import ProvisionRuntime
import ProvisionSinks
import ServiceLifecycle

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Run the Provision server with the embedded event log.")

    @Option(name: .long, help: "Where the log, control state and checkpoints live.")
    var dataDir = "provision-data"

    @Option(name: .long, help: "HOST:PORT to listen on.")
    var listen = "127.0.0.1:8470"

    @Option(name: .long, help: "The root of file sinks (default: <data-dir>/files).")
    var fileRoot: String?

    @Option(name: .long, help: "Delete log segments whose newest record is older than this (e.g. 365d).")
    var retention: String?

    @Option(name: .long, help: "Keep at most this many bytes per partition (oldest segments go first).")
    var retentionBytes: Int?

    @Option(name: .long, help: "Largest segment file, in bytes.")
    var segmentBytes: Int = 256 * 1024 * 1024

    @Flag(name: .long, help: "Seed sample datasets (orders, customers, payments), apply the example specs and keep a live trickle going (no tokens needed).")
    var demo = false

    @Flag(name: .long, help: "Development: no tokens; every request acts as an admin.")
    var dev = false

    @Option(name: .long, help: "The example specs that --demo applies.")
    var specs = "specs"

    @Option(name: .long, help: "Most records a pipeline reads and writes in one batch.")
    var batchRecords = 65_536

    @Option(name: .long, help: "Close an HTTP connection that sends nothing for this long (e.g. 30s).")
    var httpIdleTimeout = "30s"

    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    @Option(name: .long, help: ArgumentHelp(
        "A destination sinks may connect to: a host name, *.domain, an IP address or a CIDR (repeat, or separate with commas; also PROVISION_ALLOW_DESTINATIONS).",
        discussion: "Without any, sinks may connect anywhere but this server itself, and the log says so."))
    var allowDestination: [String] = []

    @Option(name: .long, help: "Keep in sync with this git repository: URL, URL#REF or URL#REF:PATH (a path, file://, git:// or http(s)://).")
    var gitops: String?

    @Option(name: .long, help: ArgumentHelp(
        "The event store: 'embedded' (the log in the data directory) or kafka://HOST:PORT[,HOST:PORT...][?PROPERTY=VALUE&...].",
        discussion: "With Kafka, topics, partitions, offsets and retention are the cluster's; properties are librdkafka's (security.protocol=SSL, ...)."))
    var store = "embedded"

    @Option(name: .long, help: "How often the git source is fetched (e.g. 30s).")
    var gitopsInterval = "60s"

    @Option(name: .long, help: "The git source's name: its objects are managed by gitops:<name>.")
    var gitopsName = "git"

    private var destinationEntries: [String] {
        allowDestination + (ProcessInfo.processInfo.environment["PROVISION_ALLOW_DESTINATIONS"].map { [$0] } ?? [])
    }

    func validate() throws {
        guard parsedListen != nil else { throw ValidationError("--listen must be HOST:PORT") }
        if store != "embedded" && KafkaStoreAddress(store) == nil {
            throw ValidationError("--store must be 'embedded' or kafka://HOST:PORT[,HOST:PORT...][?PROPERTY=VALUE&...]")
        }
        if let retention, DurationText.parseMilliseconds(retention) == nil {
            throw ValidationError("--retention must be a duration such as 30d")
        }
        guard (1...1_000_000).contains(batchRecords) else { throw ValidationError("--batch-records must be 1 to 1000000") }
        guard let idle = DurationText.parseMilliseconds(httpIdleTimeout), idle > 0 else {
            throw ValidationError("--http-idle-timeout must be a duration such as 30s")
        }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level \(logLevel)") }
        if let gitops, GitSource.shorthand(gitops, name: gitopsName, intervalMilliseconds: 1000) == nil {
            throw ValidationError("--gitops must be URL, URL#REF or URL#REF:PATH")
        }
        guard let interval = DurationText.parseMilliseconds(gitopsInterval), interval >= 1000 else {
            throw ValidationError("--gitops-interval must be a duration of at least 1s, such as 60s")
        }
        _ = interval
        do {
            _ = try SinkDestinationPolicy.parseEntries(destinationEntries)
        } catch {
            throw ValidationError("--allow-destination: \(error)")
        }
    }

    private var parsedListen: (host: String, port: Int)? {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]),
            (0...65535).contains(port)
        else { return nil }
        return (String(listen[..<colon]), port)
    }

    func run() async throws {
        #if canImport(Glibc)
        // One malloc arena. With one per thread (glibc's default, up to 8 per core), state
        // that lives across batches (join state), allocated on whichever thread ran the join,
        // pins pages of every arena, and peak RSS crept up with the input (1.3x over 4x the
        // events of a windowed join); a plain backfill's peak also drops, 97 to 72 MiB, at no
        // cost in speed. (A fixed mmap threshold flattened it further but made every batch
        // buffer fault in fresh pages: a plain backfill took 60% longer.) glibc reads the
        // setting once, before the runtime's threads exist, so the server starts itself again
        // with it (same process, same arguments).
        // Not on Kafka: librdkafka's threads allocate and free every message produced or
        // fetched, so with one arena they and the server's threads queued for one lock
        // (parsing 100,000 records to produce took 93-144 ms with one arena, 43-73 ms with
        // glibc's default; `provisionctl produce` of them 0.34-0.47 s, 0.27-0.37 s).
        if ProcessInfo.processInfo.environment["MALLOC_ARENA_MAX"] == nil, store == "embedded" {
            setenv("MALLOC_ARENA_MAX", "1", 1)
            execv("/proc/self/exe", CommandLine.unsafeArgv)
            // Only reached if exec failed: run with the defaults.
        }
        #endif
        let level = Logger.Level(rawValue: logLevel)!
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "provision")
        let (host, port) = parsedListen!
        let dataDirectory = URL(fileURLWithPath: dataDir).standardizedFileURL.path
        var logConfiguration = EmbeddedLogConfiguration(segmentBytesMax: segmentBytes)
        logConfiguration.retentionAge = retention.flatMap(DurationText.parseMilliseconds).map { .milliseconds($0) }
        logConfiguration.retentionBytes = retentionBytes
        var options = ProvisionServerRuntime.Options(
            dataDirectory: dataDirectory, host: host, port: port,
            fileRoot: fileRoot.map { URL(fileURLWithPath: $0).standardizedFileURL.path }, logConfiguration: logConfiguration)
        options.httpIdleTimeout = .milliseconds(DurationText.parseMilliseconds(httpIdleTimeout)!)
        options.batchRecordsMax = batchRecords
        options.authenticating = !(dev || demo)
        options.adminTokenSecret = ProcessInfo.processInfo.environment["PROVISION_ADMIN_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        options.secretKey = ProcessInfo.processInfo.environment["PROVISION_SECRET_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        let destinations = try SinkDestinationPolicy.parseEntries(destinationEntries)
        options.allowedDestinations = destinations.isEmpty ? nil : destinations
        options.kafka = KafkaStoreAddress(store)
        options.gitSource = gitops.flatMap {
            GitSource.shorthand($0, name: gitopsName, intervalMilliseconds: DurationText.parseMilliseconds(gitopsInterval)!)
        }
        let runtime = try await ProvisionServerRuntime(options: options, logger: logger)
        if !options.authenticating {
            logger.warning("AUTHENTICATION IS OFF (\(demo ? "--demo" : "--dev")): every request acts as an admin; never expose this server")
            printNow("provision: authentication is OFF (\(demo ? "--demo" : "--dev")): anyone who reaches the port is an admin")
        } else if let path = try await runtime.prepareAdminToken() {
            printNow("provision: the first admin token is in \(path) (readable by you only); use it with --token or PROVISION_TOKEN")
        }
        let fileRootShown = options.fileRoot

        var extraServices: [any Service] = []
        var demoProducts: [String] = []
        if demo {
            let seeded = try await DemoData.seedIfEmpty(runtime.log, logger: logger)
            let files = try SpecFiles.read([specs])
            let response: ApplyResponse
            do {
                response = try await runtime.reconciler.apply(ApplyRequest(files: files, dryRun: false), as: .development)
            } catch let rejected as ApplyRejected {
                for error in rejected.errors { printError(error.description) }
                throw ExitCode(1)
            }
            demoProducts = response.changes.filter { $0.kind == .dataProduct }.map(\.name)
            extraServices.append(DemoTrickle(log: runtime.log, logger: logger))
            printNow("demo: \(seeded ? "seeded" : "kept existing") orders, customers and payments in \(dataDirectory)/log")
        }
        let listenURL = "http://\(host):\(port)"
        let provisioned = demoProducts
        let reconciler = runtime.reconciler
        try await runtime.run(extraServices: extraServices) {
            printNow("provision: listening on \(listenURL), data in \(dataDirectory)")
            guard !provisioned.isEmpty else { return }
            printNow("demo: provisioned these products (files under \(fileRootShown)):")
            for name in provisioned {
                if let product = await reconciler.product(name, as: .development) {
                    printNow("  \(name): \(product.status.output ?? "-")")
                }
            }
            printNow("demo: watch them with 'provisionctl get products' or 'provisionctl describe product NAME'")
        }
    }
}
