import Foundation
import Testing
@testable import ProvisionModel

@Suite struct JSONTests {
    @Test func parsesAndWritesRoundTrip() throws {
        let text = #"{"a":1,"b":-2.5,"c":"x\"y\\z\n","d":[true,false,null],"e":{"f":"é😀"},"g":12345678901234}"#
        let value = try JSONParser.parse(text)
        #expect(value["a"] == .integer(1))
        #expect(value["b"] == .decimal("-2.5"))
        #expect(value["c"] == .string("x\"y\\z\n"))
        #expect(value["e"]?["f"] == .string("é😀"))
        #expect(JSONWriter.string(value) == text)
    }

    @Test func keepsKeyOrder() throws {
        let value = try JSONParser.parse(#"{"z":1,"a":2,"m":3}"#)
        guard case .object(let object) = value else { Issue.record("not an object"); return }
        #expect(object.keys == ["z", "a", "m"])
    }

    @Test func decodesEscapes() throws {
        #expect(try JSONParser.parse(#""\u00e9\ud83d\ude00\t""#) == .string("é😀\t"))
    }

    @Test(arguments: ["{", "{\"a\":}", "[1,]", "01", "\"abc", "{\"a\" 1}", "tru", "1.", "-", "{} x", "\"\\ud800\"", "\"a\u{01}\""])
    func rejectsInvalidJSON(_ text: String) {
        #expect(throws: JSONParseError.self) { try JSONParser.parse(text) }
    }

    @Test func agreesWithFoundationOnNumbers() throws {
        for text in ["0", "-0.0", "1e3", "2.5E-3", "9223372036854775807", "9223372036854775808", "123.456"] {
            let ours = try JSONParser.parse(text)
            let foundation = try JSONSerialization.jsonObject(with: Data(text.utf8), options: .fragmentsAllowed) as! NSNumber
            switch ours {
            case .integer(let integer): #expect(Double(integer) == foundation.doubleValue)
            case .decimal(let number): #expect(number.doubleValue == foundation.doubleValue)
            default: Issue.record("\(text) is not a number")
            }
        }
    }

    @Test func nonFiniteNumbersWriteAsNull() {
        var bytes: [UInt8] = []
        JSONWriter.writeNumber(.infinity, into: &bytes)
        #expect(String(decoding: bytes, as: UTF8.self) == "null")
    }
}

@Suite struct TimeTests {
    @Test func parsesRFC3339() {
        #expect(Timestamp.parse("1970-01-01T00:00:00Z") == 0)
        #expect(Timestamp.parse("2026-08-01T12:00:00Z") == 1_785_585_600_000)
        #expect(Timestamp.parse("2026-08-01T14:00:00+02:00") == 1_785_585_600_000)
        #expect(Timestamp.parse("2026-08-01T12:00:00.5Z") == 1_785_585_600_500)
        #expect(Timestamp.parse("2026-08-01") == 1_785_542_400_000)
        #expect(Timestamp.parse("1969-12-31T23:59:59Z") == -1000)
        #expect(Timestamp.parse("2024-02-29T00:00:00Z") != nil)
    }

    @Test(arguments: ["2026-02-30", "2025-02-29", "2026-13-01", "2026-08-01T25:00:00Z", "2026-08-01T12:00:00", "yesterday", "2026-8-1"])
    func rejectsInvalidTimestamps(_ text: String) {
        #expect(Timestamp.parse(text) == nil)
    }

    @Test func formatsAndAgreesWithFoundation() {
        let formatter = ISO8601DateFormatter()
        for milliseconds: Int64 in [0, 1_785_585_600_000, 951_782_400_000, -86_400_000, 4_102_444_800_000] {
            let text = Timestamp.format(milliseconds)
            #expect(formatter.string(from: Date(timeIntervalSince1970: Double(milliseconds) / 1000)) == text)
            #expect(Timestamp.parse(text) == milliseconds)
        }
        #expect(Timestamp.format(1_785_585_600_123) == "2026-08-01T12:00:00.123Z")
    }

    @Test func durations() {
        #expect(DurationText.parseMilliseconds("90d") == Int64(90) * 86_400_000)
        #expect(DurationText.parseMilliseconds("1h30m") == 5_400_000)
        #expect(DurationText.parseMilliseconds("250ms") == 250)
        #expect(DurationText.parseMilliseconds("3 months") == nil)
        #expect(DurationText.parseMilliseconds("") == nil)
        #expect(DurationText.format(milliseconds: 5_400_000) == "1h30m")
    }
}

@Suite struct JSONFieldScanTests {
    private func scan(_ text: String, _ names: [String]) throws -> [JSONValue?] {
        var values = [JSONValue?](repeating: nil, count: names.count)
        let bytes = Array(text.utf8)
        try bytes.withUnsafeBufferPointer { buffer throws(JSONParseError) in
            try JSONParser.scanObject(buffer, names: JSONFieldNames(names), into: &values)
        }
        return values
    }

    @Test func readsOnlyTheNamedFieldsAndSkipsTheRest() throws {
        let text = #"{"skip":{"deep":[1,{"x":"y"}]},"amount":12.5,"s":"a\"b","region":"EU","n":null,"t":true,"arr":[1,2]}"#
        #expect(try scan(text, ["region", "amount", "absent", "s"]) == [.string("EU"), .decimal("12.5"), nil, .string("a\"b")])
    }

    @Test func skipsStringsWithEscapedQuotesAndBackslashes() throws {
        let text = #"{"a":"x\"y","b":"ends with a backslash\\","c":"\\\"q","d":"found"}"#
        #expect(try scan(text, ["d"]) == [.string("found")])
        #expect(throws: JSONParseError.self) { try scan(#"{"a":"never closed\"}"#, ["d"]) }
    }

    @Test func findsEscapedKeys() throws {
        #expect(try scan(#"{"re\u0067ion":"EU"}"#, ["region"]) == [.string("EU")])
    }

    @Test(arguments: [#"{"a":1,}"#, #"{"a":1"#, #"[1]"#, #"{"a":tru}"#, #"{"a":"x} "#, #"{"a":1} x"#, #"{"b":{"c":}}"#, "not json"])
    func rejectsWhatIsNotAnObject(_ text: String) {
        #expect(throws: JSONParseError.self) { try scan(text, ["a"]) }
    }

    @Test func decimalsKeepEveryDigitAndAgreeWithTheStandardLibrary() throws {
        var generator = SystemRandomNumberGenerator()
        var texts = ["0.1", "0.3", "1234.56", "-0.05", "9007199254740993.5", "123456789012345.6", "0.000001", "512.40",
                     "841692974686333.29", "99999999999999999999999999999999999999", "-0.00000000000000000000000000000000000001"]
        for _ in 0..<2000 {
            let cents = Int.random(in: 0..<100_000_000, using: &generator)
            texts.append("\(cents / 100).\(String(format: "%02d", cents % 100))")
            texts.append(String(Double.random(in: -1e6..<1e6, using: &generator)))
        }
        for text in texts {
            guard case .decimal(let number) = try JSONParser.parse(text) else {
                Issue.record("\(text) did not parse as a decimal")
                continue
            }
            // Written back digit for digit, and the nearest double is the standard library's.
            if !text.contains("e") { #expect(JSONWriter.string(.decimal(number)) == text) }
            #expect(number.doubleValue == Double(text)!, "\(text)")
        }
        // Exponents are read exactly; beyond 38 digits a number is binary floating point.
        #expect(try JSONParser.parse("1.5e-7") == .decimal("0.00000015"))
        #expect(try JSONParser.parse("12E2") == .decimal(1200))
        #expect(try JSONParser.parse("123456789012345678901234567890123456789") == .number(123456789012345678901234567890123456789.0))
        #expect(try JSONParser.parse("1e400") == .number(.infinity))
    }
}
