import ArgumentParser
import Foundation

/// How a client command finds the server.
struct ClientOptions: ParsableArguments {
    @Option(name: .long, help: "The server's URL (default: $PROVISION_SERVER or http://127.0.0.1:8470).")
    var server: String?

    @Option(name: .long, help: "The API token (default: $PROVISION_TOKEN).")
    var token: String?

    var client: APIClient {
        let environment = ProcessInfo.processInfo.environment
        let url = server ?? environment["PROVISION_SERVER"] ?? "http://127.0.0.1:8470"
        return APIClient(baseURL: url.hasSuffix("/") ? String(url.dropLast()) : url,
                         token: token ?? environment["PROVISION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 })
    }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json, yaml
}

/// Prints to standard error.
func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// Prints a line to standard output without buffering, so a server's start-up summary
/// shows at once even when its output is piped.
func printNow(_ message: String) {
    FileHandle.standardOutput.write(Data((message + "\n").utf8))
}
