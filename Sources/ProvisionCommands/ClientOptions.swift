import ArgumentParser
import Foundation
import Yams

/// How a client command finds the server: flags, then the environment, then the config
/// file's server (`--context`, `PROVISION_CONTEXT`, or the file's `current`).
struct ClientOptions: ParsableArguments {
    @Option(name: .long, help: "The server's URL (default: $PROVISION_SERVER, the config file's server, or http://127.0.0.1:8470).")
    var server: String?

    @Option(name: .long, help: "The API token (default: $PROVISION_TOKEN or the config file's server's token).")
    var token: String?

    @Option(name: .long, help: "Which server of the config file to use (default: $PROVISION_CONTEXT or its 'current').")
    var context: String?

    var client: APIClient {
        get throws {
            let environment = ProcessInfo.processInfo.environment
            func value(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
            let configured = try ClientConfig.load(environment: environment)?.server(named: context ?? value("PROVISION_CONTEXT"))
            let url = server ?? value("PROVISION_SERVER") ?? configured?.url ?? "http://127.0.0.1:8470"
            return APIClient(baseURL: url.hasSuffix("/") ? String(url.dropLast()) : url,
                             token: try token ?? value("PROVISION_TOKEN") ?? configured?.resolvedToken())
        }
    }
}

/// `~/.config/provision/config.yaml` (or `$PROVISION_CONFIG`): named servers, as a
/// kubeconfig names contexts.
///
///     current: prod
///     servers:
///       local: {url: "http://127.0.0.1:8470", token: "pvn_…"}
///       prod: {url: "https://provision.example", tokenFile: "~/.config/provision/prod-token"}
struct ClientConfig: Decodable {
    struct Server: Decodable {
        var url: String
        var token: String?
        var tokenFile: String?

        func resolvedToken() throws -> String? {
            if let token { return token }
            guard let tokenFile else { return nil }
            let path = NSString(string: tokenFile).expandingTildeInPath
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw ValidationError("the config file's tokenFile \(path) cannot be read")
            }
            return text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    var current: String?
    var servers: [String: Server]
    var path = ""

    enum CodingKeys: String, CodingKey { case current, servers }

    static func load(environment: [String: String]) throws -> ClientConfig? {
        let path: String
        if let explicit = environment["PROVISION_CONFIG"], !explicit.isEmpty {
            path = explicit
        } else {
            let base = environment["XDG_CONFIG_HOME"].flatMap { $0.isEmpty ? nil : $0 }
                ?? NSString(string: "~/.config").expandingTildeInPath
            path = base + "/provision/config.yaml"
        }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        do {
            var config = try YAMLDecoder().decode(ClientConfig.self, from: text)
            config.path = path
            return config
        } catch {
            throw ValidationError("\(path) is not a Provision config file: \(error)")
        }
    }

    /// The named server, or the current one; nil when the file names none.
    func server(named name: String?) throws -> Server? {
        guard let chosen = name ?? current else { return nil }
        guard let server = servers[chosen] else {
            throw ValidationError("\(path) has no server '\(chosen)' (it has: \(servers.keys.sorted().joined(separator: ", ")))")
        }
        return server
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
