import Foundation
import ProvisionModel
import ProvisionPipeline
import Synchronization

/// What a sink's spec resolves against: the references it makes (`${secret:NAME}` from the
/// product's team's secrets, `${env:NAME}` from the server's environment) and the
/// destinations the operator lets sinks connect to.
public struct SinkResolver: Sendable {
    public var environment: [String: String]
    /// The product's team's secrets, by name.
    public var secrets: [String: String]
    public var destinations: SinkDestinationPolicy
    /// Destinations checked already: a sink resolves its host once, not per request.
    private let allowedAlready = AllowedDestinations()

    public init(environment: [String: String] = [:], secrets: [String: String] = [:],
                destinations: SinkDestinationPolicy = SinkDestinationPolicy())
    {
        self.environment = environment
        self.secrets = secrets
        self.destinations = destinations
    }

    /// `text` itself, or the value of the reference it is.
    public func resolve(_ text: String) throws -> String {
        switch ValueReference.parse(text) {
        case nil:
            return text
        case .environment(let variable):
            guard let value = environment[variable], !value.isEmpty else {
                throw SinkError(reason: "SinkUnavailable", message: "the environment variable \(variable) is not set on the server")
            }
            return value
        case .secret(let name):
            guard let value = secrets[name] else {
                throw SinkError(reason: "SinkUnavailable", message: "the team has no secret '\(name)'")
            }
            return value
        }
    }

    /// Throws `DestinationRefused` unless a sink may connect to `host`:`port`. Resolves the
    /// host once per sink, not per request.
    /// - Parameter shownAs: how the refusal names the destination: the spec's reference when
    ///   the host came from one, since a secret's value is not to be shown.
    public func checkDestination(host: String, port: Int, shownAs: String? = nil) throws {
        let endpoint = "\(host):\(port)"
        guard !allowedAlready.contains(endpoint) else { return }
        if let refusal = destinations.refusal(host: host, port: port, addresses: NetworkAddress.resolve(host),
                                              shownAs: shownAs ?? "\(host):\(port)") {
            throw SinkError(reason: "DestinationRefused", message: refusal)
        }
        allowedAlready.insert(endpoint)
    }

    /// `checkDestination` for the `http(s)://` URL `written` (as the spec has it) resolves to.
    public func checkDestination(url: String, written: String) throws {
        let shown = ValueReference.parse(written)?.description
        guard let components = URLComponents(string: url), let host = components.host, !host.isEmpty else {
            throw SinkError(reason: "SinkUnavailable", message: "'\(shown ?? PostgresURL.redact(url))' is not a URL with a host")
        }
        try checkDestination(host: host, port: components.port ?? (components.scheme == "https" ? 443 : 80), shownAs: shown)
    }
}

private final class AllowedDestinations: Sendable {
    private let endpoints = Mutex<Set<String>>([])

    func contains(_ endpoint: String) -> Bool { endpoints.withLock { $0.contains(endpoint) } }
    func insert(_ endpoint: String) { _ = endpoints.withLock { $0.insert(endpoint) } }
}

/// Where sinks may connect: the operator's allow-list (`serve --allow-destination`, host
/// names, `*.suffix` patterns and CIDRs), and never the server's own API, whatever the list
/// says — a webhook pointed at `/v1/topics/…/records` would loop records into a topic.
public struct SinkDestinationPolicy: Sendable, Equatable {
    public enum Entry: Sendable, Equatable, CustomStringConvertible {
        case host(String)
        /// `*.example.com`: any name ending in `.example.com`.
        case domain(String)
        case network(NetworkAddress, prefix: Int)

        public var description: String {
            switch self {
            case .host(let name): return name
            case .domain(let suffix): return "*." + suffix
            case .network(let address, let prefix): return "\(address)/\(prefix)"
            }
        }
    }

    /// Nil: every destination is allowed (the default, warned about at start).
    public var allowed: [Entry]?
    /// The port the server's API listens on, and the addresses it listens at (nil: every
    /// address of the machine).
    public var serverPort: Int?
    public var serverAddresses: [NetworkAddress]?

    public init(allowed: [Entry]? = nil, serverPort: Int? = nil, serverAddresses: [NetworkAddress]? = nil) {
        self.allowed = allowed
        self.serverPort = serverPort
        self.serverAddresses = serverAddresses
    }

    /// Parses `serve --allow-destination` values; throws a message naming the bad one.
    public static func parseEntries(_ texts: [String]) throws -> [Entry] {
        try texts.flatMap { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }.filter { !$0.isEmpty }
            .map { text in
                if let slash = text.firstIndex(of: "/") {
                    guard let address = NetworkAddress(String(text[..<slash])), let prefix = Int(text[text.index(after: slash)...]),
                        (0...address.bytes.count * 8).contains(prefix)
                    else { throw DestinationEntryInvalid(text: text) }
                    return .network(address, prefix: prefix)
                }
                if let address = NetworkAddress(text) { return .network(address, prefix: address.bytes.count * 8) }
                let name = text.lowercased()
                guard name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-.*".contains($0)) }) else {
                    throw DestinationEntryInvalid(text: text)
                }
                if name.hasPrefix("*.") { return .domain(String(name.dropFirst(2))) }
                guard !name.contains("*") else { throw DestinationEntryInvalid(text: text) }
                return .host(name)
            }
    }

    /// Why a sink may not connect to `host`:`port` (which resolves to `addresses`), or nil.
    public func refusal(host: String, port: Int, addresses: [NetworkAddress], shownAs shown: String) -> String? {
        let name = host.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        let literal = NetworkAddress(name)
        let all = literal.map { [$0] } ?? addresses
        if let serverPort, port == serverPort {
            let local = NetworkAddress.localAddresses()
            let isServer = all.contains { address in
                if let serverAddresses, !serverAddresses.contains(where: \.isUnspecified) {
                    return serverAddresses.contains(address) || (address.isLoopback && serverAddresses.contains(where: \.isLoopback))
                }
                return address.isLoopback || address.isUnspecified || local.contains(address)
            } || (all.isEmpty && name == "localhost")
            if isServer { return "\(shown) is this server's own API; a sink may not write to it" }
        }
        guard let allowed else { return nil }
        let permitted = allowed.contains { entry in
            switch entry {
            case .host(let allowedName): return literal == nil && name == allowedName
            case .domain(let suffix): return literal == nil && name.hasSuffix("." + suffix)
            case .network(let network, let prefix):
                // Every address the name has must be inside: one outside is where it may go.
                return !all.isEmpty && all.allSatisfy { $0.isInside(network, prefix: prefix) }
            }
        }
        return permitted ? nil : "\(shown) is not among the destinations this server allows (\(allowed.map(\.description).joined(separator: ", ")))"
    }
}

public struct DestinationEntryInvalid: Error, CustomStringConvertible {
    public var text: String
    public var description: String { "'\(text)' is not a host name, a *.domain, an IP address or a CIDR such as 10.0.0.0/8" }
}

/// An IPv4 or IPv6 address as its bytes (4 or 16).
public struct NetworkAddress: Sendable, Hashable, CustomStringConvertible {
    public var bytes: [UInt8]

    public init?(_ text: String) {
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            bytes = withUnsafeBytes(of: &v4) { Array($0) }
        } else if inet_pton(AF_INET6, text, &v6) == 1 {
            bytes = withUnsafeBytes(of: &v6) { Array($0) }
            // An IPv4-mapped IPv6 address is the IPv4 address.
            if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff { bytes = Array(bytes[12...]) }
        } else {
            return nil
        }
    }

    init(bytes: [UInt8]) { self.bytes = bytes }

    public var isLoopback: Bool { bytes.count == 4 ? bytes[0] == 127 : bytes == [UInt8](repeating: 0, count: 15) + [1] }
    public var isUnspecified: Bool { bytes.allSatisfy { $0 == 0 } }

    public func isInside(_ network: NetworkAddress, prefix: Int) -> Bool {
        guard bytes.count == network.bytes.count else { return false }
        for bit in 0..<prefix {
            let mask = UInt8(0x80) >> UInt8(bit % 8)
            if bytes[bit / 8] & mask != network.bytes[bit / 8] & mask { return false }
        }
        return true
    }

    public var description: String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        var copy = bytes
        _ = inet_ntop(bytes.count == 4 ? AF_INET : AF_INET6, &copy, &text, socklen_t(text.count))
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The addresses `host` resolves to (none when it does not).
    public static func resolve(_ host: String) -> [NetworkAddress] {
        let name = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        if let literal = NetworkAddress(name) { return [literal] }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(name, nil, &hints, &list) == 0 else { return [] }
        defer { freeaddrinfo(list) }
        var found: [NetworkAddress] = []
        var entry = list
        while let info = entry?.pointee {
            if let address = info.ai_addr.flatMap(Self.init(socketAddress:)), !found.contains(address) { found.append(address) }
            entry = info.ai_next
        }
        return found
    }

    /// The addresses of this machine's interfaces.
    public static func localAddresses() -> [NetworkAddress] {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return [] }
        defer { freeifaddrs(list) }
        var found: [NetworkAddress] = []
        var entry = list
        while let interface = entry?.pointee {
            if let address = interface.ifa_addr.flatMap(Self.init(socketAddress:)) { found.append(address) }
            entry = interface.ifa_next
        }
        return found
    }

    private init?(socketAddress: UnsafeMutablePointer<sockaddr>) {
        switch Int32(socketAddress.pointee.sa_family) {
        case AF_INET:
            var address = socketAddress.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
            self.init(bytes: withUnsafeBytes(of: &address) { Array($0) })
        case AF_INET6:
            var address = socketAddress.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
            let bytes = withUnsafeBytes(of: &address) { Array($0) }
            let mapped = bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xff && bytes[11] == 0xff
            self.init(bytes: mapped ? Array(bytes[12...]) : bytes)
        default:
            return nil
        }
    }
}
