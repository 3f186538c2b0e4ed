using System.Runtime.Versioning;

// The suite boots a Linux guest under QEMU and replays sysfs writes on the simulated kernel.
[assembly: SupportedOSPlatform("linux")]
