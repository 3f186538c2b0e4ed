using System.Text;
using PciPassthrough.Tests.TestDoubles;

namespace PciPassthrough.Storage.Tests;

public sealed class AtomicFileTests : IDisposable
{
    // On the disk file system, not tmpfs: fsync and rename are the point here.
    private readonly TempDirectory _dir = new("pcipt-atomic", Path.GetTempPath());

    public void Dispose() => _dir.Dispose();

    private static byte[] Bytes(string text) => Encoding.UTF8.GetBytes(text);

    private static string[] Entries(string directory) =>
        Directory.EnumerateFileSystemEntries(directory).Select(Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal).ToArray();

    [Fact]
    public void WriteAllBytes_NewFile_CreatesWithContent()
    {
        var path = _dir.Combine("record.json");

        AtomicFile.WriteAllBytes(path, Bytes("{\"a\":1}"));

        Assert.Equal(Bytes("{\"a\":1}"), File.ReadAllBytes(path));
        Assert.Equal(["record.json"], Entries(_dir.Path));
    }

    [Fact]
    public void WriteAllBytes_ExistingFile_ReplacesContentEntirely()
    {
        var path = _dir.Combine("record.json");
        File.WriteAllText(path, new string('x', 4096));

        AtomicFile.WriteAllBytes(path, Bytes("short"));

        Assert.Equal("short", File.ReadAllText(path));
        Assert.Equal(["record.json"], Entries(_dir.Path));
    }

    [Fact]
    public void WriteAllBytes_EmptyContent_EmptyFile()
    {
        var path = _dir.Combine("empty");

        AtomicFile.WriteAllBytes(path, []);

        Assert.Empty(File.ReadAllBytes(path));
    }

    [Fact]
    public void WriteAllBytes_ManyWrites_NoTemporaryFileLeftBehind()
    {
        var path = _dir.Combine("record.json");
        for (var i = 0; i < 50; i++)
        {
            AtomicFile.WriteAllBytes(path, Bytes($"version {i}"));
        }

        Assert.Equal("version 49", File.ReadAllText(path));
        Assert.Equal(["record.json"], Entries(_dir.Path));
    }

    [Fact]
    public void WriteAllBytes_RelativePath_WritesIntoCurrentDirectory()
    {
        var previous = Environment.CurrentDirectory;
        try
        {
            Environment.CurrentDirectory = _dir.Path;

            AtomicFile.WriteAllBytes("relative.json", Bytes("r"));
        }
        finally
        {
            Environment.CurrentDirectory = previous;
        }

        Assert.Equal("r", File.ReadAllText(_dir.Combine("relative.json")));
        Assert.Equal(["relative.json"], Entries(_dir.Path));
    }

    [Fact]
    public void WriteAllBytes_TargetDirectoryIsAFile_ThrowsAndLeavesItIntact()
    {
        var notADirectory = _dir.Combine("devices");
        File.WriteAllText(notADirectory, "old content");

        Assert.ThrowsAny<IOException>(() => AtomicFile.WriteAllBytes(Path.Combine(notADirectory, "record.json"), Bytes("new")));

        Assert.Equal("old content", File.ReadAllText(notADirectory));
        Assert.Equal(["devices"], Entries(_dir.Path));
    }

    [Fact]
    public void WriteAllBytes_TargetDirectoryMissing_ThrowsAndCreatesNothing()
    {
        var missing = _dir.Combine("missing");

        Assert.ThrowsAny<IOException>(() => AtomicFile.WriteAllBytes(Path.Combine(missing, "record.json"), Bytes("new")));

        Assert.False(Directory.Exists(missing));
        Assert.Empty(Entries(_dir.Path));
    }

    [Fact]
    public void WriteAllBytes_RenameFails_ThrowsKeepsOldContentAndRemovesTemporary()
    {
        // The target is a non-empty directory: the temporary file is written, then rename(2) fails.
        var target = _dir.Combine("record.json");
        Directory.CreateDirectory(target);
        File.WriteAllText(Path.Combine(target, "inside"), "old content");

        Assert.ThrowsAny<Exception>(() => AtomicFile.WriteAllBytes(target, Bytes("new")));

        Assert.Equal("old content", File.ReadAllText(Path.Combine(target, "inside")));
        Assert.Equal(["record.json"], Entries(_dir.Path));
        Assert.Equal(["inside"], Entries(target));
    }

    [Fact]
    public void WriteAllBytes_FailedReplaceOfExistingRecord_OtherFilesUntouched()
    {
        File.WriteAllText(_dir.Combine("a.json"), "A");
        var target = _dir.Combine("b.json");
        Directory.CreateDirectory(target);
        File.WriteAllText(Path.Combine(target, "x"), "x");

        Assert.ThrowsAny<Exception>(() => AtomicFile.WriteAllBytes(target, Bytes("B")));
        AtomicFile.WriteAllBytes(_dir.Combine("a.json"), Bytes("A2"));

        Assert.Equal("A2", File.ReadAllText(_dir.Combine("a.json")));
        Assert.DoesNotContain(Entries(_dir.Path), AtomicFile.IsTemporary);
    }

    [Theory]
    [InlineData(".record.json.0123456789abcdef0123456789abcdef.tmp")]
    [InlineData(".abcdefghijklmnopqrstuvwx.json.00000000000000000000000000000000.tmp")]
    [InlineData("..tmp")]
    public void IsTemporary_TemporaryNaming_True(string name)
    {
        Assert.True(AtomicFile.IsTemporary(name));
    }

    [Theory]
    [InlineData("record.json")]
    [InlineData("record.tmp")]             // no leading dot
    [InlineData(".record.json")]           // no .tmp suffix
    [InlineData(".record.json.tmp.bak")]
    [InlineData(".record.json.TMP")]
    [InlineData("abcdefghijklmnopqrstuvwx.json")]
    [InlineData("")]
    public void IsTemporary_OtherNames_False(string name)
    {
        Assert.False(AtomicFile.IsTemporary(name));
    }

    [Fact]
    public void IsTemporary_NameOfTheWritersTemporaryFile_True()
    {
        // The writer names its temporary ".<file>.<guid:N>.tmp" in the target's directory.
        var name = $".record.json.{Guid.NewGuid():N}{AtomicFile.TemporarySuffix}";

        Assert.True(AtomicFile.IsTemporary(name));
        Assert.Equal(".tmp", AtomicFile.TemporarySuffix);
    }

    [Fact]
    public void FsyncDirectory_RealDirectory_Succeeds()
    {
        File.WriteAllText(_dir.Combine("a"), "a");

        AtomicFile.FsyncDirectory(_dir.Path);
        AtomicFile.FsyncDirectory("/tmp");
    }

    [Fact]
    public void FsyncDirectory_MissingDirectory_ThrowsIOException()
    {
        Assert.Throws<IOException>(() => AtomicFile.FsyncDirectory(_dir.Combine("missing")));
    }

    [Fact]
    public void FsyncDirectory_RegularFile_ThrowsIOException()
    {
        File.WriteAllText(_dir.Combine("file"), "x");

        Assert.Throws<IOException>(() => AtomicFile.FsyncDirectory(_dir.Combine("file")));
    }

    [Fact]
    public void Delete_ExistingFile_Removed()
    {
        var path = _dir.Combine("record.json");
        File.WriteAllText(path, "x");

        AtomicFile.Delete(path);

        Assert.Empty(Entries(_dir.Path));
    }

    [Fact]
    public void Move_ToOtherDirectory_MovesBytesAndRefusesOverwrite()
    {
        var source = _dir.Combine("a.json");
        var quarantine = Directory.CreateDirectory(_dir.Combine("quarantine")).FullName;
        File.WriteAllBytes(source, [0, 1, 2, 0xff]);

        AtomicFile.Move(source, Path.Combine(quarantine, "a.json.1"));

        Assert.False(File.Exists(source));
        Assert.Equal(new byte[] { 0, 1, 2, 0xff }, File.ReadAllBytes(Path.Combine(quarantine, "a.json.1")));
        File.WriteAllText(source, "second");
        Assert.ThrowsAny<IOException>(() => AtomicFile.Move(source, Path.Combine(quarantine, "a.json.1")));
        Assert.Equal("second", File.ReadAllText(source));
    }
}
