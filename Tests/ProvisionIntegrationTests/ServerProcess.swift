import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The `provisionctl` binary under test: `$PROVISIONCTL_BIN`, or the debug build beside the sources.
let provisionctlPath: String = {
    if let path = ProcessInfo.processInfo.environment["PROVISIONCTL_BIN"] { return path }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    return root.appendingPathComponent(".build/debug/provisionctl").path
}()

struct CommandResult {
    var status: Int32
    var output: String
    var errorOutput: String
}

/// Runs `provisionctl` with arguments and waits for it.
@discardableResult
func provisionctl(_ arguments: [String], input: Data? = nil) throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: provisionctlPath)
    process.arguments = arguments
    let outputFile = NSTemporaryDirectory() + "provisionctl-out-\(UUID().uuidString)"
    let errorFile = outputFile + ".err"
    _ = FileManager.default.createFile(atPath: outputFile, contents: nil)
    _ = FileManager.default.createFile(atPath: errorFile, contents: nil)
    process.standardOutput = FileHandle(forWritingAtPath: outputFile)
    process.standardError = FileHandle(forWritingAtPath: errorFile)
    if let input {
        let pipe = Pipe()
        process.standardInput = pipe
        try process.run()
        pipe.fileHandleForWriting.write(input)
        try pipe.fileHandleForWriting.close()
    } else {
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }
    process.waitUntilExit()
    defer {
        try? FileManager.default.removeItem(atPath: outputFile)
        try? FileManager.default.removeItem(atPath: errorFile)
    }
    return CommandResult(status: process.terminationStatus,
                         output: (try? String(contentsOfFile: outputFile, encoding: .utf8)) ?? "",
                         errorOutput: (try? String(contentsOfFile: errorFile, encoding: .utf8)) ?? "")
}

/// A free TCP port on 127.0.0.1, found by binding port 0.
func freePort() -> Int {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(descriptor) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) }
    }
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// `provisionctl serve` on a temporary data directory and a free port.
final class ServerProcess: @unchecked Sendable {
    let dataDirectory: String
    let port: Int
    private var process: Process?
    let logPath: String

    var url: String { "http://127.0.0.1:\(port)" }
    var fileRoot: String { dataDirectory + "/files" }

    init(dataDirectory: String = NSTemporaryDirectory() + "provision-it-\(UUID().uuidString)") {
        self.dataDirectory = dataDirectory
        port = freePort()
        logPath = dataDirectory + ".log"
    }

    func start() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: provisionctlPath)
        process.arguments = ["serve", "--data-dir", dataDirectory, "--listen", "127.0.0.1:\(port)"]
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = FileHandle(forWritingAtPath: logPath)!
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        self.process = process
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if try await isHealthy() { return }
            guard process.isRunning else { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw Failure("the server did not become healthy; log:\n\(serverLog)")
    }

    /// The server's peak resident set size so far, in KiB (`VmHWM`).
    var peakResidentKiB: Int? {
        guard let process, let status = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") })
        else { return nil }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
    }

    var serverLog: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    private func isHealthy() async throws -> Bool {
        var request = URLRequest(url: URL(string: url + "/healthz")!)
        request.timeoutInterval = 2
        do {
            let (_, response) = try await URLSession.shared.data(for: request)
            return (response as? HTTPURLResponse)?.statusCode == 200
        } catch {
            return false
        }
    }

    /// Sends a signal and waits for the process to end; returns its exit status.
    @discardableResult
    func stop(signal: Int32 = SIGTERM) -> Int32 {
        guard let process else { return -1 }
        kill(process.processIdentifier, signal)
        process.waitUntilExit()
        self.process = nil
        return process.terminationStatus
    }

    func ctl(_ arguments: [String], input: Data? = nil) throws -> CommandResult {
        try provisionctl(arguments + ["--server", url], input: input)
    }

    /// The product as `get product NAME -o json` prints it.
    func product(_ name: String) throws -> [String: Any]? {
        let result = try ctl(["get", "product", name, "-o", "json"])
        guard result.status == 0 else { return nil }
        return try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any]
    }

    /// The product straight from the API: cheap enough to poll every few milliseconds.
    func fetchProduct(_ name: String) async throws -> [String: Any]? {
        var request = URLRequest(url: URL(string: url + "/v1/products/" + name)!)
        request.timeoutInterval = 5
        let (data, response) = try await URLSession.shared.data(for: request)
        guard (response as? HTTPURLResponse)?.statusCode == 200 else { return nil }
        return try JSONSerialization.jsonObject(with: data) as? [String: Any]
    }

    /// Polls the API until the product meets the condition. The poll is quick, so a test can
    /// catch a backfill in the middle.
    func waitForProduct(_ name: String, timeout: Duration = .seconds(300),
                        until condition: ([String: Any]) -> Bool) async throws -> [String: Any] {
        let deadline = ContinuousClock.now + timeout
        var last: [String: Any]?
        while ContinuousClock.now < deadline {
            if let product = try await fetchProduct(name) {
                last = product
                if condition(product) { return product }
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw Failure("product \(name) did not reach the condition; last: \(String(describing: last))\nlog:\n\(serverLog.suffix(3000))")
    }

    deinit {
        if let process, process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}

struct Failure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension Dictionary where Key == String, Value == Any {
    var status: [String: Any] { self["status"] as? [String: Any] ?? [:] }
    var phase: String? { status["phase"] as? String }
    var recordsWritten: Int { (status["recordsWritten"] as? NSNumber)?.intValue ?? -1 }
    var lag: Int { (status["lag"] as? NSNumber)?.intValue ?? -1 }
}
