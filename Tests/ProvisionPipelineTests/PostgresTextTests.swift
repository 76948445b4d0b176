import NIOCore
import ProvisionModel
import Testing
import ProvisionPipeline
@testable import ProvisionSinks

@Suite struct PostgresTextTests {
    private func copyField(_ value: Value?, _ columnType: String) -> String {
        var buffer = ByteBuffer()
        var scratch: [UInt8] = []
        PostgresText.appendCopyField(value, columnType: columnType, to: &buffer, scratch: &scratch)
        return buffer.readString(length: buffer.readableBytes) ?? ""
    }

    @Test func copyTextEscapesWhatTheFormatGivesAMeaning() {
        #expect(copyField(.string("plain"), "text") == "plain")
        #expect(copyField(.string("a\tb\nc\rd\\e"), "text") == #"a\tb\nc\rd\\e"#)
        #expect(copyField(nil, "text") == #"\N"#)
        #expect(copyField(.null, "bigint") == #"\N"#)
        #expect(copyField(.json(.null), "jsonb") == #"\N"#)
    }

    @Test func numbersTimesAndBooleansAreWrittenInTheirInputSyntax() {
        #expect(copyField(.integer(0), "bigint") == "0")
        #expect(copyField(.integer(-9_223_372_036_854_775_808), "bigint") == "-9223372036854775808")
        #expect(copyField(.integer(9_223_372_036_854_775_807), "bigint") == "9223372036854775807")
        #expect(copyField(.decimal(1234.5), "numeric") == "1234.5")
        #expect(copyField(.timestamp(1_767_225_600_123), "timestamptz") == "2026-01-01T00:00:00.123Z")
        #expect(copyField(.boolean(true), "boolean") == "t")
    }

    @Test func aJSONStringKeepsItsQuotesOnlyInAJSONBColumn() {
        #expect(copyField(.json(.string("EU")), "text") == "EU")
        #expect(copyField(.json(.string("EU")), "jsonb") == #""EU""#)
        #expect(copyField(.string("EU"), "jsonb") == #""EU""#)
        #expect(copyField(.json(.object(JSONObject([(key: "a", value: .integer(1))]))), "jsonb") == #"{"a":1}"#)
    }

    @Test func derivedNamesFitPostgresIdentifiers() {
        #expect(PostgresText.identifier("orders", suffix: "_build2") == "orders_build2")
        let long = String(repeating: "é", count: 40)  // 80 bytes
        let derived = PostgresText.identifier(long, suffix: "_build12")
        #expect(derived.utf8.count <= 63)
        #expect(derived.hasSuffix("_build12"))
        #expect(PostgresText.quoted(#"a"b"#) == #""a""b""#)
    }

    @Test func sslModesFollowLibpqAndAnUnknownOneIsAClearError() throws {
        _ = try PostgresServer.tls("disable")
        _ = try PostgresServer.tls(nil)
        _ = try PostgresServer.tls("verify-full")
        #expect(throws: SinkError.self) { try PostgresServer.tls("sometimes") }
    }
}
