#if canImport(Glibc)
import Glibc
#endif
import Foundation
import ProvisionPipeline

/// Files under the file root, opened one path component at a time with `openat` and
/// `O_NOFOLLOW`: a symbolic link anywhere below the root (a directory or the file itself) is
/// refused, so an output can never be written, cut or deleted outside the root, whoever
/// placed the link.
enum RootedFile {
    /// Opens `relativePath` under `root` for reading and writing, creating missing
    /// directories and the file.
    static func open(root: String, relativePath: String) throws -> Int32 {
        let (directory, name) = try walk(root: root, relativePath: relativePath, create: true)
        defer { close(directory!) }
        let descriptor = openat(directory!, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw failure(errno, "\(root)/\(relativePath)") }
        return descriptor
    }

    /// Removes the file if it is a regular file under the root; a link is left alone.
    static func remove(root: String, relativePath: String) throws {
        let (directory, name) = try walk(root: root, relativePath: relativePath, create: false)
        guard let directory else { return }
        defer { close(directory) }
        var info = stat()
        guard fstatat(directory, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else {
            if errno == ENOENT { return }
            throw failure(errno, "\(root)/\(relativePath)")
        }
        guard info.st_mode & S_IFMT == S_IFREG else { return }
        guard unlinkat(directory, name, 0) == 0 else { throw failure(errno, "\(root)/\(relativePath)") }
    }

    /// The directory holding the file, opened without following links, and the file's name.
    /// Nil when a directory is missing and `create` is false.
    private static func walk(root: String, relativePath: String, create: Bool) throws -> (Int32?, String) {
        let components = relativePath.split(separator: "/").map(String.init)
        guard let name = components.last, !components.contains(".."), !components.contains(".") else {
            throw SinkError(reason: "InvalidOutputPath", message: "'\(relativePath)' is not a path inside the file root")
        }
        var directory = Glibc.open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directory < 0, errno == ENOENT, create {
            // The root is the operator's choice (links in its own path are theirs): made as given.
            try? FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            directory = Glibc.open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        }
        guard directory >= 0 else {
            if !create, errno == ENOENT { return (nil, name) }
            throw failure(errno, root)
        }
        var walked = root
        for component in components.dropLast() {
            walked += "/" + component
            if create, mkdirat(directory, component, 0o755) != 0, errno != EEXIST {
                let code = errno
                close(directory)
                throw failure(code, walked)
            }
            let next = openat(directory, component, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            let code = errno
            close(directory)
            guard next >= 0 else {
                if !create, code == ENOENT { return (nil, name) }
                throw failure(code, walked)
            }
            directory = next
        }
        return (directory, name)
    }

    private static func failure(_ code: Int32, _ path: String) -> SinkError {
        var info = stat()
        if code == ELOOP || code == ENOTDIR, lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFLNK {
            return SinkError(reason: "InvalidOutputPath", message: "\(path) is a symbolic link; outputs are never written through links")
        }
        return SinkError(reason: "SinkUnavailable", message: "cannot open \(path): \(String(cString: strerror(code)))")
    }
}
