using System.Globalization;
using PciPassthrough.Sysfs;

namespace PciPassthrough.Lifecycle;

/// <summary>What /proc says about a process: whether it exists and when it started.</summary>
public static class ProcessInfo
{
    /// <summary>
    /// The process's start time in clock ticks since boot (field 22 of <c>/proc/PID/stat</c>), or
    /// null when there is no such process. Together with the pid it names one process for good:
    /// a pid reused by a later process has a later start time.
    /// </summary>
    public static long? StartTime(ISysfs sysfs, int pid)
    {
        if (pid <= 0)
        {
            return null;
        }

        string? stat;
        try
        {
            stat = sysfs.ReadText(SysfsPaths.ProcessStat(pid));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        // The command (field 2) is in parentheses and may itself contain spaces and ')': the
        // fields after it start after the last ')'.
        var close = stat?.LastIndexOf(')') ?? -1;
        if (stat is null || close < 0)
        {
            return null;
        }

        var rest = stat[(close + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        // rest[0] is field 3 (state), so field 22 is rest[19].
        return rest.Length > 19 && long.TryParse(rest[19], NumberStyles.None, CultureInfo.InvariantCulture, out var start)
            ? start
            : null;
    }

    /// <summary>The process's command name (<c>/proc/PID/comm</c>), or null.</summary>
    public static string? Command(ISysfs sysfs, int pid)
    {
        try
        {
            return sysfs.ReadText(SysfsPaths.ProcessComm(pid))?.Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
