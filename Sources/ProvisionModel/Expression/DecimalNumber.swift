/// An exact decimal number, `significand × 10^-scale`, with at most 38 digits and a scale of
/// 0 to 38: the values of SQL's `DECIMAL(38, s)`. Money, notionals and risk figures pass
/// through Provision with their digits unchanged, and `+ - *` are exact.
///
/// Arithmetic rules (the README's Expressions section says the same):
/// - `a + b`, `a - b`: scale `max(scale(a), scale(b))`;
/// - `a * b`: scale `scale(a) + scale(b)`;
/// - `a / b`: scale `max(6, scale(a), scale(b))`, rounded half away from zero;
/// - a result with more than 38 digits drops fractional digits (rounded half away from zero)
///   until it fits; one whose integer part alone needs more than 38 digits is an overflow.
///
/// Equality and order are numeric: `1.50 == 1.5`. The scale is kept for output, so `512.40`
/// prints as `512.40`, as PostgreSQL's `numeric` does.
public struct DecimalNumber: Sendable, Comparable, Hashable, CustomStringConvertible {
    // The significand split in two halves keeps 8-byte alignment, and the scale is one byte:
    // 17 bytes in all, so a JSON value or an expression value holding a decimal is no larger
    // than one holding a string (24-byte stride). At 32 bytes every batch's slots and
    // outcomes grew by a third, and a backfill spent its time in page faults.
    private let low: UInt64
    private let high: Int64
    private let storedScale: UInt8

    /// Digits after the decimal point.
    public var scale: Int { Int(storedScale) }

    public static let digitsMax = 38
    public static let scaleMax = 38

    public var significand: Int128 { Int128(high) << 64 | Int128(low) }

    /// Nil when the significand has more than 38 digits or the scale is outside 0...38.
    public init?(significand: Int128, scale: Int) {
        guard (0...Self.scaleMax).contains(scale), significand.magnitude < Self.limit else { return nil }
        self.init(unchecked: significand, scale: scale)
    }

    private init(unchecked significand: Int128, scale: Int) {
        low = UInt64(truncatingIfNeeded: significand)
        high = Int64(truncatingIfNeeded: significand >> 64)
        storedScale = UInt8(scale)
    }

    public init(_ integer: Int64) {
        self.init(unchecked: Int128(integer), scale: 0)
    }

    public static let zero = DecimalNumber(0)

    /// 10^38: every significand's magnitude is below it. A literal, so reading it costs no
    /// lazy initialisation on the hot path.
    static let limit: UInt128 = 100_000_000_000_000_000_000_000_000_000_000_000_000
    static let powersOfTen: [UInt128] = {
        var powers: [UInt128] = [1]
        for _ in 1...38 { powers.append(powers.last! * 10) }
        return powers
    }()

    public var isNegative: Bool { high < 0 }
    public var isZero: Bool { low == 0 && high == 0 }

    /// The value as an integer, when it has no fractional part and fits in 64 bits.
    public var exactInt64: Int64? {
        let divisor = Int128(Self.powersOfTen[scale])
        let (quotient, remainder) = significand.quotientAndRemainder(dividingBy: divisor)
        guard remainder == 0 else { return nil }
        return Int64(exactly: quotient)
    }

    /// The nearest binary floating-point number, for sinks and callers that need one.
    public var doubleValue: Double { Double(text) ?? 0 }

    // MARK: Parsing

    /// Parses `-12.50`, `1e3`, `1.5E-2`: JSON's number grammar (a leading `+` is also taken).
    /// Nil for anything else, or for a number that needs more than 38 digits or a scale
    /// beyond 38 (trailing fractional zeros are dropped first when they do not fit).
    public init?(_ text: some StringProtocol) {
        var text = String(text)
        guard let parsed = text.withUTF8({ DecimalNumber.parse($0) }) else { return nil }
        self = parsed
    }

    public static func parse(_ bytes: UnsafeBufferPointer<UInt8>) -> DecimalNumber? {
        parse(bytes, from: 0, to: bytes.count)
    }

    public static func parse(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int, to end: Int) -> DecimalNumber? {
        var position = start
        var negative = false
        if position < end, bytes[position] == UInt8(ascii: "-") || bytes[position] == UInt8(ascii: "+") {
            negative = bytes[position] == UInt8(ascii: "-")
            position += 1
        }
        var significand: UInt128 = 0
        var digits = 0
        var scale = 0
        // Zeros after the point not yet taken into the significand: trailing ones may be dropped.
        var pendingZeros = 0
        var integerDigits = 0
        while position < end, bytes[position] &- UInt8(ascii: "0") < 10 {
            let digit = UInt128(bytes[position] &- UInt8(ascii: "0"))
            if significand != 0 || digit != 0 {
                digits += 1
                guard digits <= digitsMax else { return nil }
                significand = significand &* 10 &+ digit
            }
            integerDigits += 1
            position += 1
        }
        guard integerDigits > 0 || (position < end && bytes[position] == UInt8(ascii: ".")) else { return nil }
        if position < end, bytes[position] == UInt8(ascii: ".") {
            position += 1
            var fractionDigits = 0
            while position < end, bytes[position] &- UInt8(ascii: "0") < 10 {
                let digit = UInt128(bytes[position] &- UInt8(ascii: "0"))
                fractionDigits += 1
                position += 1
                if digit == 0 {
                    pendingZeros += 1
                    continue
                }
                scale += pendingZeros + 1
                guard scale <= 77 else { return nil }
                if significand == 0 {
                    significand = digit
                    digits = 1
                } else {
                    digits += pendingZeros + 1
                    guard digits <= digitsMax else { return nil }
                    significand = significand &* powersOfTen[pendingZeros] &* 10 &+ digit
                }
                pendingZeros = 0
            }
            guard fractionDigits > 0, integerDigits + fractionDigits > 0 else { return nil }
        }
        var exponent = 0
        if position < end, bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E") {
            position += 1
            var exponentNegative = false
            if position < end, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") {
                exponentNegative = bytes[position] == UInt8(ascii: "-")
                position += 1
            }
            var exponentDigits = 0
            while position < end, bytes[position] &- UInt8(ascii: "0") < 10 {
                exponent = min(exponent * 10 + Int(bytes[position] &- UInt8(ascii: "0")), 10_000)
                exponentDigits += 1
                position += 1
            }
            guard exponentDigits > 0 else { return nil }
            if exponentNegative { exponent = -exponent }
        }
        guard position == end else { return nil }
        // Trailing fractional zeros keep the scale (`512.40`) when they fit.
        if pendingZeros > 0 {
            let kept = min(pendingZeros, scaleMax - scale, significand == 0 ? pendingZeros : digitsMax - digits)
            if kept > 0 {
                significand *= powersOfTen[kept]
                scale += kept
            }
        }
        scale -= exponent
        if scale < 0 {
            guard significand == 0 || -scale <= digitsMax - Wide(significand).digitCount else { return nil }
            significand *= powersOfTen[min(-scale, 38)]
            scale = 0
        }
        while scale > scaleMax, significand != 0, significand % 10 == 0 {
            significand /= 10
            scale -= 1
        }
        if significand == 0 { scale = min(scale, scaleMax) }
        guard scale <= scaleMax, significand < limit else { return nil }
        let signed = Int128(significand)
        return DecimalNumber(unchecked: negative ? -signed : signed, scale: scale)
    }

    // MARK: Printing

    /// Plain notation with exactly `scale` fractional digits: `-0.05`, `1537.20`, `42`.
    public func write(into output: inout [UInt8]) {
        if isNegative { output.append(UInt8(ascii: "-")) }
        var magnitude = significand.magnitude
        // 39 digits at most, written backwards into a fixed buffer.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 40) { buffer in
            var count = 0
            // 128-bit division is a library call; most values fit in 64 bits, whose division
            // by a constant is a multiplication.
            while magnitude > UInt128(UInt64.max) {
                buffer[count] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
                count += 1
            }
            var small = UInt64(magnitude)
            while small > 0 || count <= scale {
                buffer[count] = UInt8(ascii: "0") + UInt8(small % 10)
                small /= 10
                count += 1
            }
            var index = count - 1
            while index >= 0 {
                if index == scale - 1 { output.append(UInt8(ascii: ".")) }
                output.append(buffer[index])
                index -= 1
            }
        }
    }

    public var text: String {
        var bytes: [UInt8] = []
        write(into: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    public var description: String { text }

    // MARK: Comparison

    public static func == (lhs: DecimalNumber, rhs: DecimalNumber) -> Bool { compare(lhs, rhs) == 0 }
    public static func < (lhs: DecimalNumber, rhs: DecimalNumber) -> Bool { compare(lhs, rhs) < 0 }

    public func hash(into hasher: inout Hasher) {
        // Equal values hash alike whatever their scale: hash the value without trailing zeros.
        var significand = self.significand
        var scale = self.scale
        while scale > 0, significand % 10 == 0 {
            significand /= 10
            scale -= 1
        }
        hasher.combine(significand)
        hasher.combine(scale)
    }

    /// The significand, when it fits in 64 bits (as almost every value does).
    @inline(__always)
    private var smallSignificand: Int64? {
        let value = Int64(bitPattern: low)
        return high == (value < 0 ? -1 : 0) ? value : nil
    }

    /// -1, 0 or 1, exactly, whatever the scales.
    public static func compare(_ lhs: DecimalNumber, _ rhs: DecimalNumber) -> Int {
        if lhs.storedScale == rhs.storedScale, let left = lhs.smallSignificand, let right = rhs.smallSignificand {
            return left < right ? -1 : (left == right ? 0 : 1)
        }
        let left = lhs.significand, right = rhs.significand
        if lhs.scale == rhs.scale { return left < right ? -1 : (left == right ? 0 : 1) }
        if lhs.isNegative != rhs.isNegative { return lhs.isNegative ? -1 : 1 }
        // The common case: 64-bit significands a few places apart; the product cannot overflow.
        let difference = abs(lhs.scale - rhs.scale)
        if difference <= 18, let small = (lhs.scale < rhs.scale ? lhs : rhs).smallSignificand {
            let scaled = Int128(small) &* Int128(smallPowersOfTen[difference])
            let (a, b) = lhs.scale < rhs.scale ? (scaled, right) : (left, scaled)
            return a < b ? -1 : (a == b ? 0 : 1)
        }
        // Align the smaller scale up; if that overflows, its magnitude is the larger one.
        if lhs.scale < rhs.scale {
            let (scaled, overflow) = left.multipliedReportingOverflow(by: Int128(powersOfTen[rhs.scale - lhs.scale]))
            if overflow { return lhs.isNegative ? -1 : 1 }
            return scaled < right ? -1 : (scaled == right ? 0 : 1)
        }
        let (scaled, overflow) = right.multipliedReportingOverflow(by: Int128(powersOfTen[lhs.scale - rhs.scale]))
        if overflow { return rhs.isNegative ? 1 : -1 }
        return left < scaled ? -1 : (left == scaled ? 0 : 1)
    }

    public static func compare(_ lhs: DecimalNumber, _ rhs: Int64) -> Int { compare(lhs, DecimalNumber(rhs)) }

    /// 10^0 … 10^18 as a literal table.
    private static let smallPowersOfTen: [Int64] = [
        1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000, 1_000_000_000, 10_000_000_000,
        100_000_000_000, 1_000_000_000_000, 10_000_000_000_000, 100_000_000_000_000, 1_000_000_000_000_000,
        10_000_000_000_000_000, 100_000_000_000_000_000, 1_000_000_000_000_000_000,
    ]

    // MARK: Arithmetic

    public struct Overflow: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String { "decimal overflow: the result needs more than 38 digits before the point" }
    }

    public func adding(_ other: DecimalNumber) throws(Overflow) -> DecimalNumber {
        try Self.sum(self, other, negateRight: false)
    }

    public func subtracting(_ other: DecimalNumber) throws(Overflow) -> DecimalNumber {
        try Self.sum(self, other, negateRight: true)
    }

    public var negated: DecimalNumber { DecimalNumber(unchecked: -significand, scale: scale) }

    private static func sum(_ lhs: DecimalNumber, _ rhs: DecimalNumber, negateRight: Bool) throws(Overflow) -> DecimalNumber {
        let right = negateRight ? -rhs.significand : rhs.significand
        if lhs.scale == rhs.scale {
            let (result, overflow) = lhs.significand.addingReportingOverflow(right)
            if !overflow, result.magnitude < limit { return DecimalNumber(unchecked: result, scale: lhs.scale) }
        }
        let scale = max(lhs.scale, rhs.scale)
        let a = Wide(lhs.significand.magnitude).times(powersOfTen[scale - lhs.scale])
        let b = Wide(right.magnitude).times(powersOfTen[scale - rhs.scale])
        let aNegative = lhs.isNegative, bNegative = right < 0
        if aNegative == bNegative { return try fit(a.plus(b), negative: aNegative, scale: scale) }
        return a < b ? try fit(b.minus(a), negative: bNegative, scale: scale) : try fit(a.minus(b), negative: aNegative, scale: scale)
    }

    public func multiplied(by other: DecimalNumber) throws(Overflow) -> DecimalNumber {
        let scale = self.scale + other.scale
        if scale <= Self.scaleMax {
            let (result, overflow) = significand.multipliedReportingOverflow(by: other.significand)
            if !overflow, result.magnitude < Self.limit { return DecimalNumber(unchecked: result, scale: scale) }
        }
        let product = Wide(significand.magnitude).times(other.significand.magnitude)
        return try Self.fit(product, negative: isNegative != other.isNegative && !isZero && !other.isZero, scale: scale)
    }

    /// The scale of a quotient: at least six places, and never fewer than either operand has.
    public static func quotientScale(_ lhs: DecimalNumber, _ rhs: DecimalNumber) -> Int { max(6, lhs.scale, rhs.scale) }

    /// Nil when `other` is zero.
    public func divided(by other: DecimalNumber) throws(Overflow) -> DecimalNumber? {
        guard !other.isZero else { return nil }
        let targetScale = Self.quotientScale(self, other)
        // |a| · 10^(k − sa + sb) / |b|, rounded half away from zero, has scale k.
        let exponent = targetScale - scale + other.scale
        var numerator = Wide(significand.magnitude)
        var remaining = exponent
        while remaining > 0 {
            let step = min(remaining, 38)
            guard numerator.digitCount + step <= 77 else { throw Overflow() }
            numerator = numerator.times(Self.powersOfTen[step])
            remaining -= step
        }
        let divisor = other.significand.magnitude
        var (quotient, remainder) = numerator.dividedReportingRemainder(by: divisor)
        if remainder >= divisor - remainder { quotient = quotient.plus(Wide(1)) }
        return try Self.fit(quotient, negative: isNegative != other.isNegative && !quotient.isZero, scale: targetScale)
    }

    /// A wide magnitude as a decimal of `scale`, dropping fractional digits (rounded half away
    /// from zero) while it has more than 38 digits or a scale above 38.
    private static func fit(_ magnitude: Wide, negative: Bool, scale: Int) throws(Overflow) -> DecimalNumber {
        var magnitude = magnitude
        var scale = scale
        let drop = max(magnitude.digitCount - digitsMax, scale - scaleMax, 0)
        if drop > 0 {
            guard drop <= scale else { throw Overflow() }
            magnitude = magnitude.roundedDividing(byPowerOfTen: drop)
            scale -= drop
            if magnitude.digitCount > digitsMax {
                // Rounding carried into a 39th digit (…999.5 → …1000).
                guard scale > 0 else { throw Overflow() }
                magnitude = magnitude.roundedDividing(byPowerOfTen: 1)
                scale -= 1
            }
        }
        guard magnitude.high == 0, magnitude.low < limit else { throw Overflow() }
        let signed = Int128(magnitude.low)
        return DecimalNumber(unchecked: negative ? -signed : signed, scale: scale)
    }
}

/// A 256-bit unsigned magnitude: enough for a product of two 38-digit significands, or one
/// scaled by 10^38, which the slow paths of decimal arithmetic need.
struct Wide: Comparable {
    var high: UInt128
    var low: UInt128

    init(_ value: UInt128) {
        high = 0
        low = value
    }

    init(high: UInt128, low: UInt128) {
        self.high = high
        self.low = low
    }

    var isZero: Bool { high == 0 && low == 0 }

    static func < (lhs: Wide, rhs: Wide) -> Bool {
        lhs.high != rhs.high ? lhs.high < rhs.high : lhs.low < rhs.low
    }

    func plus(_ other: Wide) -> Wide {
        let (low, carry) = self.low.addingReportingOverflow(other.low)
        return Wide(high: high &+ other.high &+ (carry ? 1 : 0), low: low)
    }

    /// Requires `self >= other`.
    func minus(_ other: Wide) -> Wide {
        let (low, borrow) = self.low.subtractingReportingOverflow(other.low)
        return Wide(high: high &- other.high &- (borrow ? 1 : 0), low: low)
    }

    /// The caller keeps the product below 2^256.
    func times(_ factor: UInt128) -> Wide {
        let lowProduct = low.multipliedFullWidth(by: factor)
        let highProduct = high &* factor
        return Wide(high: lowProduct.high &+ highProduct, low: lowProduct.low)
    }

    func dividedReportingRemainder(by divisor: UInt128) -> (quotient: Wide, remainder: UInt128) {
        let (highQuotient, highRemainder) = high.quotientAndRemainder(dividingBy: divisor)
        let (lowQuotient, remainder) = divisor.dividingFullWidth((high: highRemainder, low: low))
        return (Wide(high: highQuotient, low: lowQuotient), remainder)
    }

    /// `self / 10^count`, rounded half away from zero; `count` is at most 76.
    func roundedDividing(byPowerOfTen count: Int) -> Wide {
        precondition(count <= 76)
        var value = self
        var remaining = count
        var remainder: UInt128 = 0
        var divisorTotal = Wide(1)
        var remainderTotal = Wide(0)
        // Divide in steps of at most 10^38, tracking the whole remainder to round once.
        while remaining > 0 {
            let step = min(remaining, 38)
            let divisor = DecimalNumber.powersOfTen[step]
            (value, remainder) = value.dividedReportingRemainder(by: divisor)
            remainderTotal = remainderTotal.plus(Wide(remainder).times(divisorTotal.low))
            divisorTotal = divisorTotal.times(divisor)
            remaining -= step
        }
        // Round up when 2 · remainder ≥ divisor.
        if !(remainderTotal.plus(remainderTotal) < divisorTotal) { value = value.plus(Wide(1)) }
        return value
    }

    var digitCount: Int {
        var count = 0
        var value = self
        if value.high != 0 {
            // Strip 38 digits at once while the high half is in use.
            value = value.dividedReportingRemainder(by: DecimalNumber.powersOfTen[38]).quotient
            count = 38
        }
        if value.high != 0 {
            value = value.dividedReportingRemainder(by: DecimalNumber.powersOfTen[38]).quotient
            count += 38
        }
        var low = value.low
        while low > 0 {
            low /= 10
            count += 1
        }
        return count
    }
}

/// Literals, for tests and fixed values: `"841692974686333.29"` keeps every digit; a float
/// literal is read from its shortest decimal form, so `12.5` is exactly 12.5.
extension DecimalNumber: ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral, ExpressibleByStringLiteral {
    public init(integerLiteral value: Int64) { self.init(value) }

    public init(floatLiteral value: Double) {
        guard let decimal = DecimalNumber(String(value)) else { preconditionFailure("\(value) does not fit a decimal") }
        self = decimal
    }

    public init(stringLiteral value: String) {
        guard let decimal = DecimalNumber(value) else { preconditionFailure("'\(value)' is not a decimal") }
        self = decimal
    }
}
