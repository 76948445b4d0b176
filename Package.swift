// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Provision",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "provisionctl", targets: ["provisionctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", from: "1.0.2"),
    ],
    targets: [
        // Spec and status types, values, JSON, the expression language and validation. No I/O.
        .target(
            name: "ProvisionModel",
            dependencies: [.product(name: "Yams", package: "Yams")]
        ),
        // Named points where a test stops the server on purpose (off unless switched on).
        .target(name: "ProvisionFailpoints"),
        // CRC-32C with the processor's instruction where it has one.
        .target(name: "CRC32C"),
        // The `EventLog` protocol and the embedded segmented log.
        .target(
            name: "ProvisionLog",
            dependencies: [
                "ProvisionModel", "CRC32C", "ProvisionFailpoints",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // librdkafka, from Debian's librdkafka-dev.
        .systemLibrary(name: "CRdKafka", path: "Sources/CRdKafka", pkgConfig: "rdkafka", providers: [.apt(["librdkafka-dev"])]),
        // The `EventLog` over Apache Kafka, through librdkafka.
        .target(
            name: "ProvisionKafka",
            dependencies: ["ProvisionModel", "ProvisionLog", "CRdKafka", .product(name: "Logging", package: "swift-log")]
        ),
        // Reader, processor (filter and projection), checkpoints, the sink protocol.
        .target(
            name: "ProvisionPipeline",
            dependencies: [
                "ProvisionModel", "ProvisionLog", "ProvisionFailpoints",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // One folder per sink.
        .target(
            name: "ProvisionSinks",
            dependencies: [
                "ProvisionModel", "ProvisionPipeline", "ProvisionFailpoints",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPCompression", package: "swift-nio-extras"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Reconciler and control state.
        .target(
            name: "ProvisionControl",
            dependencies: [
                "ProvisionModel", "ProvisionLog", "ProvisionPipeline", "ProvisionSinks", "ProvisionFailpoints",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // REST API: the model and the control plane only.
        .target(
            name: "ProvisionServer",
            dependencies: [
                "ProvisionModel", "ProvisionLog", "ProvisionControl",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdAuth", package: "hummingbird-auth"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            // The API's contract, compiled into the server (no bundle to find at run time).
            resources: [
                .embedInCode("Resources/openapi.json"),
                .embedInCode("Resources/portal/index.html"),
                .embedInCode("Resources/portal/portal.js"),
                .embedInCode("Resources/portal/portal.css"),
            ]
        ),
        // The composition root: which log, which control store, which services a server runs.
        .target(
            name: "ProvisionRuntime",
            dependencies: [
                "ProvisionModel", "ProvisionLog", "ProvisionKafka", "ProvisionPipeline", "ProvisionSinks", "ProvisionControl", "ProvisionServer",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Subprocess", package: "swift-subprocess"),
            ]
        ),
        // The command-line interface.
        .target(
            name: "ProvisionCommands",
            dependencies: [
                "ProvisionModel", "ProvisionLog", "ProvisionSinks", "ProvisionControl", "ProvisionRuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(name: "provisionctl", dependencies: ["ProvisionCommands"]),

        .testTarget(name: "ProvisionModelTests", dependencies: ["ProvisionModel"]),
        .testTarget(name: "ProvisionLogTests", dependencies: ["ProvisionModel", "ProvisionLog"]),
        .testTarget(name: "ProvisionPipelineTests", dependencies: ["ProvisionPipeline", "ProvisionSinks"]),
        .testTarget(name: "ProvisionControlTests", dependencies: ["ProvisionControl"]),
        .testTarget(
            name: "ProvisionServerTests",
            dependencies: [
                "ProvisionServer", "ProvisionControl",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ]
        ),
        .testTarget(
            name: "ProvisionIntegrationTests",
            dependencies: [
                "ProvisionModel", "ProvisionLog", "ProvisionKafka", "ProvisionPipeline", "ProvisionSinks", "ProvisionFailpoints",
                "ProvisionControl",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            exclude: ["flaky_proxy.py", "webhook_receiver.py", "function_receiver.py", "portal_test.py", "git_http_server.py", "kafka_partitions.py",
                      "kafka_topic_config.py"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
