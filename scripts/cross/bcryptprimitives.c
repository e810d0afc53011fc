/* A stand-in for Windows' bcryptprimitives.dll, for running twlab.exe under
 * Wine 8.0 (Debian bookworm), which has no such DLL. Rust's std (1.78 and
 * later) imports ProcessPrng from it for random bytes (HashMap keys), so
 * without it the .exe does not even load. scripts/wine-smoke builds this
 * with mingw and puts it next to the .exe; never shipped.
 *
 * ProcessPrng fills the buffer with random bytes and always returns TRUE
 * (Windows documents no failure). RtlGenRandom (advapi32's
 * SystemFunction036) takes a ULONG length, so larger requests go in pieces. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
