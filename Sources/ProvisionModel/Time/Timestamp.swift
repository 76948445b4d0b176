/// Milliseconds since the Unix epoch, UTC. Event times and log timestamps share this unit.
public typealias TimestampMilliseconds = Int64

/// RFC 3339 timestamps, parsed and printed by hand: the pipeline parses one per event,
/// and Foundation's formatters cost microseconds each.
public enum Timestamp {
    /// The times Provision accepts from events, specs and producers: years 0000 to 9999, the
    /// range RFC 3339 can write. Bounding every time keeps a time plus or minus any duration
    /// (`DurationText.maximumMilliseconds`) far inside 64 bits, so no arithmetic on an
    /// event's time can overflow.
    public static let earliest: TimestampMilliseconds = -62_167_219_200_000
    public static let latest: TimestampMilliseconds = 253_402_300_799_999

    public static func isInRange(_ milliseconds: TimestampMilliseconds) -> Bool {
        milliseconds >= earliest && milliseconds <= latest
    }

    /// Parses `2026-08-01`, `2026-08-01T12:00:00Z`, `2026-08-01T12:00:00.123+02:00` and the
    /// same with a space instead of `T`. Returns nil for anything else.
    public static func parse(_ text: String) -> TimestampMilliseconds? {
        var text = text
        return text.withUTF8 { parse($0) }
    }

    public static func parse(_ bytes: UnsafeBufferPointer<UInt8>) -> TimestampMilliseconds? {
        var position = 0
        func digits(_ count: Int) -> Int? {
            guard position + count <= bytes.count else { return nil }
            var value = 0
            for _ in 0..<count {
                let digit = bytes[position] &- UInt8(ascii: "0")
                guard digit < 10 else { return nil }
                value = value * 10 + Int(digit)
                position += 1
            }
            return value
        }
        func expect(_ byte: UInt8) -> Bool {
            guard position < bytes.count, bytes[position] == byte else { return false }
            position += 1
            return true
        }
        guard let year = digits(4), expect(UInt8(ascii: "-")), let month = digits(2), expect(UInt8(ascii: "-")),
            let day = digits(2), (1...12).contains(month), (1...daysInMonth(year: year, month: month)).contains(day)
        else { return nil }
        var hour = 0, minute = 0, second = 0, milliseconds = 0, offsetSeconds = 0
        if position < bytes.count {
            guard bytes[position] == UInt8(ascii: "T") || bytes[position] == UInt8(ascii: "t")
                || bytes[position] == UInt8(ascii: " ")
            else { return nil }
            position += 1
            guard let parsedHour = digits(2), expect(UInt8(ascii: ":")), let parsedMinute = digits(2),
                expect(UInt8(ascii: ":")), let parsedSecond = digits(2),
                parsedHour < 24, parsedMinute < 60, parsedSecond < 61
            else { return nil }
            hour = parsedHour
            minute = parsedMinute
            second = min(parsedSecond, 59)
            if expect(UInt8(ascii: ".")) {
                var scale = 100
                var fractionDigits = 0
                while position < bytes.count, bytes[position] &- UInt8(ascii: "0") < 10 {
                    milliseconds += Int(bytes[position] - UInt8(ascii: "0")) * scale
                    scale /= 10
                    fractionDigits += 1
                    position += 1
                }
                guard fractionDigits > 0 else { return nil }
            }
            guard position < bytes.count else { return nil }
            if bytes[position] == UInt8(ascii: "Z") || bytes[position] == UInt8(ascii: "z") {
                position += 1
            } else if bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") {
                let sign = bytes[position] == UInt8(ascii: "-") ? -1 : 1
                position += 1
                guard let offsetHours = digits(2), expect(UInt8(ascii: ":")), let offsetMinutes = digits(2),
                    offsetHours < 24, offsetMinutes < 60
                else { return nil }
                offsetSeconds = sign * (offsetHours * 3600 + offsetMinutes * 60)
            } else {
                return nil
            }
        }
        guard position == bytes.count else { return nil }
        let days = daysFromCivil(year: year, month: month, day: day)
        let seconds = Int64(days) * 86_400 + Int64(hour * 3600 + minute * 60 + second) - Int64(offsetSeconds)
        return seconds * 1000 + Int64(milliseconds)
    }

    /// Prints `2026-08-01T12:00:00Z`, or `2026-08-01T12:00:00.123Z` when there are milliseconds.
    public static func format(_ milliseconds: TimestampMilliseconds) -> String {
        var output: [UInt8] = []
        output.reserveCapacity(24)
        write(milliseconds, into: &output)
        return String(decoding: output, as: UTF8.self)
    }

    public static func write(_ milliseconds: TimestampMilliseconds, into output: inout [UInt8]) {
        let (seconds, millisecondPart) = floorDivide(milliseconds, 1000)
        let (days, secondOfDay) = floorDivide(seconds, 86_400)
        let (year, month, day) = civilFromDays(Int(days))
        func append(_ value: Int, width: Int) {
            var divisor = 1
            for _ in 1..<width { divisor *= 10 }
            var value = value
            while divisor > 0 {
                output.append(UInt8(ascii: "0") + UInt8(value / divisor))
                value %= divisor
                divisor /= 10
            }
        }
        if year < 0 || year > 9999 {
            output.append(contentsOf: String(year).utf8)
        } else {
            append(year, width: 4)
        }
        output.append(UInt8(ascii: "-"))
        append(month, width: 2)
        output.append(UInt8(ascii: "-"))
        append(day, width: 2)
        output.append(UInt8(ascii: "T"))
        append(Int(secondOfDay / 3600), width: 2)
        output.append(UInt8(ascii: ":"))
        append(Int(secondOfDay % 3600 / 60), width: 2)
        output.append(UInt8(ascii: ":"))
        append(Int(secondOfDay % 60), width: 2)
        if millisecondPart != 0 {
            output.append(UInt8(ascii: "."))
            append(Int(millisecondPart), width: 3)
        }
        output.append(UInt8(ascii: "Z"))
    }

    private static func floorDivide(_ value: Int64, _ divisor: Int64) -> (Int64, Int64) {
        let quotient = value / divisor
        let remainder = value % divisor
        return remainder < 0 ? (quotient - 1, remainder + divisor) : (quotient, remainder)
    }

    private static func isLeapYear(_ year: Int) -> Bool {
        (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
    }

    private static func daysInMonth(year: Int, month: Int) -> Int {
        switch month {
        case 2: return isLeapYear(year) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    // Howard Hinnant's days_from_civil and civil_from_days.
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let adjustedYear = month <= 2 ? year - 1 : year
        let era = (adjustedYear >= 0 ? adjustedYear : adjustedYear - 399) / 400
        let yearOfEra = adjustedYear - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    static func civilFromDays(_ days: Int) -> (year: Int, month: Int, day: Int) {
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}

/// Durations written as `90d`, `12h`, `30m`, `15s`, `250ms`, or combined: `1h30m`.
public enum DurationText {
    /// 10,000 years: longer than any span of `Timestamp`'s range, so `since: 3650000d` still
    /// means "everything", and short enough that times and durations add without overflow.
    public static let maximumMilliseconds: Int64 = 3_652_425 * 86_400_000

    public enum Parsed: Equatable {
        case milliseconds(Int64)
        /// Written as a duration, but longer than `maximumMilliseconds`.
        case tooLong
        case invalid
    }

    /// Nil for anything that is not a duration, and for durations beyond `maximumMilliseconds`.
    public static func parseMilliseconds(_ text: String) -> Int64? {
        if case .milliseconds(let value) = parse(text) { return value }
        return nil
    }

    /// The error message for text that `parse` did not take, naming the limit when that is why.
    public static func problem(with text: String, examples: String) -> String {
        parse(text) == .tooLong
            ? "'\(text)' is longer than the limit of \(format(milliseconds: maximumMilliseconds))"
            : "'\(text)' is not a duration (examples: \(examples))"
    }

    public static func parse(_ text: String) -> Parsed {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty else { return .invalid }
        var tooLong = false
        var position = 0
        var total: Int64 = 0
        while position < bytes.count {
            var amount: Int64 = 0
            let digitsStart = position
            while position < bytes.count, bytes[position] &- UInt8(ascii: "0") < 10 {
                let (shifted, overflow) = amount.multipliedReportingOverflow(by: 10)
                let (sum, carry) = shifted.addingReportingOverflow(Int64(bytes[position] - UInt8(ascii: "0")))
                if overflow || carry { tooLong = true } else { amount = sum }
                position += 1
            }
            guard position > digitsStart else { return .invalid }
            let unitStart = position
            while position < bytes.count, bytes[position] &- UInt8(ascii: "a") < 26 { position += 1 }
            let unit = String(decoding: bytes[unitStart..<position], as: UTF8.self)
            let scale: Int64
            switch unit {
            case "ms": scale = 1
            case "s": scale = 1000
            case "m": scale = 60_000
            case "h": scale = 3_600_000
            case "d": scale = 86_400_000
            case "w": scale = 7 * 86_400_000
            default: return .invalid
            }
            let (scaled, overflow) = amount.multipliedReportingOverflow(by: scale)
            if overflow || scaled > maximumMilliseconds - total { tooLong = true } else { total += scaled }
        }
        return tooLong ? .tooLong : .milliseconds(total)
    }

    public static func format(milliseconds: Int64) -> String {
        let units: [(Int64, String)] = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s"), (1, "ms")]
        if milliseconds == 0 { return "0s" }
        var remaining = abs(milliseconds)
        var text = milliseconds < 0 ? "-" : ""
        for (scale, unit) in units where remaining >= scale {
            text += "\(remaining / scale)\(unit)"
            remaining %= scale
        }
        return text
    }
}
