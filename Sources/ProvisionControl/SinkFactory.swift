import Foundation
import Logging
import ProvisionModel
import ProvisionPipeline
import ProvisionSinks

/// Builds the sink a product spec names. The one place that knows every sink kind.
public struct SinkFactory: Sendable {
    public let fileRoot: String
    public let checkpoints: any CheckpointStore
    /// Where `${env:NAME}` references in sink specs are resolved.
    public let environment: [String: String]
    /// Where sinks may connect.
    public let destinations: SinkDestinationPolicy
    public let logger: Logger

    public init(fileRoot: String, checkpoints: any CheckpointStore,
                environment: [String: String] = ProcessInfo.processInfo.environment,
                destinations: SinkDestinationPolicy = SinkDestinationPolicy(), logger: Logger = Logger(label: "provision.sink"))
    {
        self.fileRoot = fileRoot
        self.checkpoints = checkpoints
        self.environment = environment
        self.destinations = destinations
        self.logger = logger
    }

    /// - Parameter keyField: the output field that identifies a record; table sinks need one.
    /// - Parameter secrets: the product's team's secrets, by name, for `${secret:NAME}`.
    public func makeSink(for spec: DataProductSpec, product: String, outputSchema: Schema, keyField: String?,
                         build: SinkBuild = SinkBuild(number: 1, kind: .fresh), secrets: [String: String] = [:]) -> any Sink {
        let resolver = SinkResolver(environment: environment, secrets: secrets, destinations: destinations)
        switch spec.sink {
        case .file(let file):
            // Validation guarantees the path normalises inside the root.
            return FileSink(root: fileRoot, relativePath: FilePaths.normalizedRelativePath(file.path) ?? file.path, format: file.format,
                            outputSchema: outputSchema, product: product, checkpoints: checkpoints)
        case .postgres(let postgres):
            return PostgresSink(spec: postgres, resolver: resolver, product: product, outputSchema: outputSchema,
                                keyField: keyField ?? spec.key ?? "", build: build, logger: logger)
        case .elasticsearch(let elasticsearch):
            return ElasticsearchSink(spec: elasticsearch, resolver: resolver, product: product, outputSchema: outputSchema,
                                     keyField: keyField ?? spec.key ?? "", strictMapping: spec.select != nil, build: build,
                                     checkpoints: checkpoints, logger: logger)
        case .webhook(let webhook):
            return WebhookSink(spec: webhook, resolver: resolver, product: product, outputSchema: outputSchema,
                               checkpoints: checkpoints, logger: logger)
        }
    }

    /// True when the sink builds a changed output beside the current one and swaps it in
    /// (or extends it in place), so the old output must not be removed first.
    public func rebuildsInPlace(_ spec: DataProductSpec) -> Bool {
        switch spec.sink {
        case .file, .webhook: return false
        case .postgres, .elasticsearch: return true
        }
    }

    /// Why the sink of `spec` may not connect where it points (with the spec field that says
    /// where), resolving its URL's reference with `secrets`; nil when it may, or when the URL
    /// cannot be resolved (an error of its own).
    public func destinationRefusal(of spec: DataProductSpec, secrets: [String: String]) -> (path: String, message: String)? {
        let resolver = SinkResolver(environment: environment, secrets: secrets, destinations: destinations)
        do {
            switch spec.sink {
            case .file:
                return nil
            case .postgres(let postgres):
                guard let parts = PostgresURL.parse(try resolver.resolve(postgres.url)) else { return nil }
                try resolver.checkDestination(host: parts.host, port: parts.port, shownAs: ValueReference.parse(postgres.url)?.description)
            case .elasticsearch(let elasticsearch):
                try resolver.checkDestination(url: try resolver.resolve(elasticsearch.url), written: elasticsearch.url)
            case .webhook(let webhook):
                try resolver.checkDestination(url: try resolver.resolve(webhook.url), written: webhook.url)
            }
        } catch let error as SinkError where error.reason == "DestinationRefused" {
            return ("spec.sink.\(spec.sink.kind).url", error.message)
        } catch {
            return nil
        }
        return nil
    }

    /// The same factory with checkpoints kept under `suffix`-ed names.
    public func keepingCheckpoints(suffix: String) -> SinkFactory {
        SinkFactory(fileRoot: fileRoot, checkpoints: SuffixedCheckpointStore(base: checkpoints, suffix: suffix),
                    environment: environment, destinations: destinations, logger: logger)
    }

    /// Where the output of `spec` lives, for status; never with a password.
    public func location(of spec: DataProductSpec) -> String {
        // Each sink says where it writes; making one does no I/O.
        makeSink(for: spec, product: "", outputSchema: Schema(), keyField: spec.key).location
    }
}
