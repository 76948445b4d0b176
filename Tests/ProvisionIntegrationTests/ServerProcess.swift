import AsyncHTTPClient
import Foundation
import Synchronization
import NIOCore
import NIOHTTP1
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// True under CI (`CI=true`): a test server that is missing fails the run there instead of
/// skipping its tests.
let runningInCI = ["true", "1"].contains(ProcessInfo.processInfo.environment["CI"]?.lowercased() ?? "")


// MARK: HTTP

/// One HTTP exchange from a test, always with a deadline (AsyncHTTPClient): a request on a
/// half-closed connection fails in time instead of hanging the suite.
struct HTTPReply {
    var status: Int
    var body: Data
    var headers: HTTPHeaders = [:]

    var json: Any? { try? JSONSerialization.jsonObject(with: body, options: .fragmentsAllowed) }
}

/// The tests' client. It lets go of idle connections after 5 s, before the server's idle
/// timeout (30 s by default) closes them: a request sent on a connection the server has just
/// closed fails with "I/O on closed channel".
let testHTTPClient = HTTPClient(eventLoopGroupProvider: .singleton,
                                configuration: .init(connectionPool: .init(idleTimeout: .seconds(5))))

/// The admin token every test server starts with (`PROVISION_ADMIN_TOKEN`): requests and
/// `provisionctl` send it unless a test says otherwise.
let testAdminToken = "pvn_test-admin-\(UUID().uuidString)"

/// The secrets tests hand to servers (tokens, passwords, signing keys, team secrets). Every
/// answer `httpRequest` receives and every test server's log is checked for each of them when
/// the server stops: across the whole suite, a secret that leaves a server fails the test.
enum TestSecrets {
    private static let values = Mutex<Set<String>>([testAdminToken])

    static func register(_ secret: String) { _ = values.withLock { $0.insert(secret) } }

    /// The registered secrets `text` contains.
    static func found(in text: some StringProtocol) -> [String] {
        values.withLock { values in values.filter { text.contains($0) }.sorted() }
    }
}

/// - Parameter token: the bearer token to send (nil: none).
func httpRequest(_ method: HTTPMethod, _ url: String, body: Data? = nil, contentType: String = "application/json",
                 headers: [(String, String)] = [], token: String? = testAdminToken,
                 timeout: Duration = .seconds(30)) async throws -> HTTPReply
{
    var request = HTTPClientRequest(url: url)
    request.method = method
    if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
    for (name, value) in headers { request.headers.add(name: name, value: value) }
    if let body {
        request.headers.add(name: "Content-Type", value: contentType)
        request.body = .bytes(ByteBuffer(data: body))
    }
    let milliseconds = timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000
    let deadline = NIODeadline.now() + .milliseconds(milliseconds)
    let response = try await testHTTPClient.execute(request, deadline: deadline)
    let bytes = try await response.body.collect(upTo: 256 * 1024 * 1024)
    let reply = HTTPReply(status: Int(response.status.code), body: Data(buffer: bytes), headers: response.headers)
    let leaked = TestSecrets.found(in: String(decoding: reply.body, as: UTF8.self))
    if !leaked.isEmpty { Issue.record("the answer to \(method) \(url) holds \(leaked.count) secret(s) a test gave the server") }
    return reply
}

/// Every item of a paged list (`Provision-Continue`), page after page.
func httpListAll(_ url: String, token: String? = testAdminToken) async throws -> [[String: Any]] {
    var items: [[String: Any]] = []
    var next: String?
    repeat {
        let separator = url.contains("?") ? "&" : "?"
        let reply = try await httpRequest(.GET, url + (next.map { "\(separator)continue=\($0)" } ?? ""), token: token)
        guard reply.status == 200, let page = reply.json as? [[String: Any]] else {
            throw Failure("GET \(url): \(reply.status) \(String(decoding: reply.body, as: UTF8.self))")
        }
        items += page
        next = reply.headers.first(name: "Provision-Continue")
    } while next != nil
    return items
}

// MARK: Processes

/// Waits for a child process to end, at most `timeout`; past it the process is killed and
/// the wait fails with `what` in the message, so a hung child fails its test in minutes.
func waitForExit(_ process: Process, timeout: Duration, what: String) throws {
    let deadline = ContinuousClock.now + timeout
    while process.isRunning {
        if ContinuousClock.now >= deadline {
            // Where it is stuck, before it is gone: a hang that shows once in many runs is
            // not found again by reading its log.
            let backtraces = threadBacktraces(of: process.processIdentifier)
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw Failure("\(what) did not finish within \(timeout); it was killed. Its threads:\n\(backtraces)")
        }
        usleep(5_000)
    }
    process.waitUntilExit()
}

/// Every thread's stack of a running process, by gdb, cut to the frames that say most.
func threadBacktraces(of pid: Int32) -> String {
    guard let gdb = ["/usr/bin/gdb", "/usr/local/bin/gdb"].first(where: FileManager.default.isExecutableFile(atPath:)) else {
        return "(no gdb on this machine to show them)"
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
    process.arguments = ["60", gdb, "-p", String(pid), "-batch", "-ex", "thread apply all bt 25"]
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    do { try process.run() } catch { return "(gdb did not start: \(error))" }
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let frames = String(decoding: data, as: UTF8.self).split(separator: "\n").filter { $0.hasPrefix("#") || $0.hasPrefix("Thread") }
    return String(frames.joined(separator: "\n").prefix(60_000))
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
func waitForPort(_ port: Int, of process: Process, timeout: Duration = .seconds(30), what: String) throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        guard process.isRunning else { throw Failure("\(what) exited before it listened on port \(port)") }
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        close(descriptor)
        if connected == 0 { return }
        usleep(20_000)
    }
    throw Failure("\(what) did not listen on port \(port) within \(timeout)")
}

/// Removes what a test left on disk, unless `PROVISION_KEEP_TEST_DATA` asks to keep it.
func removeTestData(_ paths: String...) {
    guard ProcessInfo.processInfo.environment["PROVISION_KEEP_TEST_DATA"] == nil else { return }
    for path in paths { try? FileManager.default.removeItem(atPath: path) }
}

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

/// Runs `provisionctl` with arguments and waits for it, at most `timeout`.
@discardableResult
/// - Parameter environment: changes to the environment it runs in (nil removes a variable);
///   `PROVISION_TOKEN` is the suite's admin token unless set or removed here.
func provisionctl(_ arguments: [String], input: Data? = nil, environment changes: [String: String?] = [:],
                  timeout: Duration = .seconds(180)) throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: provisionctlPath)
    process.arguments = arguments
    var environment = ProcessInfo.processInfo.environment
    if environment["PROVISION_TOKEN"] == nil { environment["PROVISION_TOKEN"] = testAdminToken }
    for (name, value) in changes { environment[name] = value }
    process.environment = environment
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
    defer {
        try? FileManager.default.removeItem(atPath: outputFile)
        try? FileManager.default.removeItem(atPath: errorFile)
    }
    try waitForExit(process, timeout: timeout, what: "provisionctl \(arguments.prefix(3).joined(separator: " "))")
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
    /// Added to `serve`'s arguments at every start.
    var arguments: [String] = []
    /// Added to the server's environment at every start (failpoints, for one).
    var environment: [String: String] = [:]
    /// A command that runs the server, such as `prlimit --nofile=512`; none by default.
    var launcher: [String] = []

    var url: String { "http://127.0.0.1:\(port)" }
    var fileRoot: String { dataDirectory + "/files" }

    init(dataDirectory: String = NSTemporaryDirectory() + "provision-it-\(UUID().uuidString)") {
        self.dataDirectory = dataDirectory
        port = freePort()
        logPath = dataDirectory + ".log"
    }

    func start() async throws {
        let process = Process()
        let serve = ["serve", "--data-dir", dataDirectory, "--listen", "127.0.0.1:\(port)"] + arguments
        if let command = launcher.first {
            process.executableURL = URL(fileURLWithPath: command)
            process.arguments = Array(launcher.dropFirst()) + [provisionctlPath] + serve
        } else {
            process.executableURL = URL(fileURLWithPath: provisionctlPath)
            process.arguments = serve
        }
        process.environment = ProcessInfo.processInfo.environment.merging(["PROVISION_ADMIN_TOKEN": testAdminToken]) { _, new in new }
            .merging(environment) { _, new in new }
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = FileHandle(forWritingAtPath: logPath)!
        logOffsetAtStart = Int(log.seekToEndOfFile())
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        self.process = process
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if try await isHealthy() { return }
            // Armed failpoints may stop the server before it answers: waitForFailpoint checks.
            guard process.isRunning else {
                if logSinceStart.contains("failpoint ") { return }
                break
            }
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
    private var logOffsetAtStart = 0
    /// What the server logged since it was last started.
    var logSinceStart: String { String(decoding: Data(serverLog.utf8).dropFirst(logOffsetAtStart), as: UTF8.self) }

    private func isHealthy() async throws -> Bool {
        (try? await httpRequest(.GET, url + "/healthz", timeout: .seconds(2)))?.status == 200
    }

    /// Sends a signal and waits for the process to end, at most a minute (then SIGKILL);
    /// returns its exit status.
    @discardableResult
    func stop(signal: Int32 = SIGTERM) -> Int32 {
        guard let process else { return -1 }
        kill(process.processIdentifier, signal)
        do {
            try waitForExit(process, timeout: .seconds(60), what: "the server (signal \(signal))")
        } catch {
            Issue.record("\(error)\nthe end of its log:\n\(logSinceStart.suffix(4000))")
        }
        self.process = nil
        let leaked = TestSecrets.found(in: logSinceStart)
        if !leaked.isEmpty { Issue.record("the server's log holds \(leaked.count) secret(s) a test gave it") }
        return process.terminationStatus
    }

    /// Waits for the server to kill itself at a failpoint (`PROVISION_FAILPOINTS` in
    /// `environment`), and checks that it died there and nowhere else.
    func waitForFailpoint(_ name: String, timeout: Duration = .seconds(120)) throws {
        guard let process else { throw Failure("the server is not running") }
        let deadline = ContinuousClock.now + timeout
        while process.isRunning, ContinuousClock.now < deadline { usleep(20_000) }
        guard !process.isRunning else {
            throw Failure("the server did not reach failpoint \(name) in \(timeout); log:\n\(serverLog.suffix(3000))")
        }
        process.waitUntilExit()
        self.process = nil
        guard process.terminationReason == .uncaughtSignal, process.terminationStatus == SIGKILL,
              logSinceStart.contains("failpoint \(name) reached")
        else {
            throw Failure("the server ended (status \(process.terminationStatus)) without reaching failpoint \(name); log:\n\(serverLog.suffix(3000))")
        }
    }

    /// Stops the server if it runs, and starts it again with these failpoints armed (none:
    /// a plain restart).
    func restart(failpoints: String? = nil) async throws {
        if process != nil { stop() }
        environment["PROVISION_FAILPOINTS"] = failpoints ?? ""
        try await start()
    }

    /// Creates a token through the CLI with the admin token and returns its secret, which
    /// `TestSecrets` then looks for in every answer and log.
    func createToken(_ name: String, team: String, role: String = "editor", expires: String? = nil) throws -> String {
        let result = try ctl(["token", "create", name, "--team", team, "--role", role] + (expires.map { ["--expires", $0] } ?? []))
        #expect(result.status == 0, "\(result.errorOutput)")
        let secret = result.output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(secret.hasPrefix("pvn_") && secret.count == 47, "\(secret)")
        TestSecrets.register(secret)
        return secret
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
        let reply = try await httpRequest(.GET, url + "/v1/products/" + name, timeout: .seconds(10))
        guard reply.status == 200 else { return nil }
        return reply.json as? [String: Any]
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
        // The data directory, its log and what tests kept beside it (`<data>-specs`, …).
        let parent = (dataDirectory as NSString).deletingLastPathComponent
        let name = (dataDirectory as NSString).lastPathComponent
        let siblings = ((try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? []).filter { $0.hasPrefix(name) }
        for sibling in siblings { removeTestData(parent + "/" + sibling) }
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

@Suite(.timeLimit(.minutes(1))) struct TestEnvironmentTests {
    /// Under CI every test server must be there: a suite that skipped for want of one would
    /// let a broken sink land.
    @Test func ciProvidesEveryTestServer() {
        guard runningInCI else { return }
        let environment = ProcessInfo.processInfo.environment
        for variable in ["PROVISION_TEST_POSTGRES_URL", "PROVISION_TEST_ELASTICSEARCH_URLS", "PROVISION_TEST_PROMETHEUS_BIN", "PROVISION_TEST_SCHEMATHESIS_BIN", "PROVISION_TEST_KAFKA_PYTHON", "PROVISION_TEST_KAFKA_BROKERS", "PROVISIONCTL_BIN"] {
            #expect(environment[variable]?.isEmpty == false, "\(variable) is not set: run the suite with scripts/test")
        }
    }
}
