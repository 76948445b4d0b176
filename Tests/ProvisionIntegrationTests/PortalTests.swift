import Foundation
import Testing

let browserAvailable = ProcessInfo.processInfo.environment["PROVISION_TEST_BROWSER"] == "1"
    || (FileManager.default.isExecutableFile(atPath: "/usr/bin/chromedriver") && FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium"))

/// The portal in a real browser: `portal_test.py` drives headless Chromium through sign-in,
/// the catalog, a product built in the form, previewed, applied, watched going Live and
/// filling, a dead letter, a deletion; then another team's view. Screenshots of each step
/// are kept with the test data (`<data>-shots`).
@Suite(.serialized, .timeLimit(.minutes(6)), .enabled(if: browserAvailable || runningInCI, "needs chromium, chromium-driver and selenium, which scripts/test installs"))
struct PortalTests {
    @Test func aPersonFindsDataBuildsAProductAndWatchesItInTheBrowser() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let editor = try server.createToken("risk-portal", team: "risk")
        let other = try server.createToken("growth-portal", team: "growth")
        let kept = productSpec(backfill: "all").replacingOccurrences(of: "eu-large-orders", with: "risk-kept")
        #expect(try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, kept, to: server.dataDirectory + "-specs")]).status == 0)
        let orders = TestOrder.generate(count: 150, end: Date(), days: 2, seed: 211)
        let input = server.dataDirectory + "-orders.jsonl"
        try orders.map(\.jsonLine).joined(separator: "\n").write(toFile: input, atomically: true, encoding: .utf8)
        #expect(try server.ctl(["produce", "orders", "--file", input]).status == 0)

        let shots = server.dataDirectory + "-shots"
        try FileManager.default.createDirectory(atPath: shots, withIntermediateDirectories: true)
        let seeded = try JSONSerialization.data(withJSONObject: orders.map { ["amount": $0.amount, "region": $0.region] })
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("portal_test.py").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script, server.url, testAdminToken, editor, other, shots]
        let output = server.dataDirectory + "-portal.log"
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: output)
        process.standardError = process.standardOutput
        let stdin = Pipe()
        process.standardInput = stdin
        try process.run()
        stdin.fileHandleForWriting.write(seeded)
        try stdin.fileHandleForWriting.close()
        try waitForExit(process, timeout: .seconds(300), what: "the portal test in Chromium")
        let report = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        #expect(process.terminationStatus == 0, "the portal test failed (screenshots in \(shots)):\n\(report.suffix(6000))")
        #expect(report.contains("steps passed"), "\(report.suffix(2000))")
        // The product the browser deleted is gone from the server too.
        #expect(try await server.fetchProduct("eu-big-orders") == nil)
    }
}
