"""What repositories keep for the rest of a unit of work (org rows and settings, a contact's
addresses and enrolments) never hides a change made in that same unit of work."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine

from optflow.adapters.repository import OrgMemo
from optflow.adapters.unit_of_work import SqlUnitOfWork
from optflow.domain.records import EnrollmentStatus

NOW = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)


def test_org_settings_read_again_after_they_change(sqlite_engine: Engine) -> None:
    with SqlUnitOfWork(sqlite_engine) as uow:
        org = uow.orgs.create("Acme", NOW, settings={"program_name": "before"})
        assert uow.orgs.settings(org).program_name == "before"
        assert uow.orgs.get(org).settings_json == '{"program_name": "before"}'
        uow.orgs.replace_settings(org, {"program_name": "after"})
        assert uow.orgs.settings(org).program_name == "after"
        assert uow.orgs.get(org).settings_json == '{"program_name": "after"}'


def test_a_memo_shared_by_nested_units_of_work_sees_changes_of_each(sqlite_engine: Engine) -> None:
    memo = OrgMemo()
    with sqlite_engine.connect() as conn, conn.begin():
        with SqlUnitOfWork(connection=conn, org_memo=memo) as first:
            org = first.orgs.create("Acme", NOW, settings={"program_name": "before"})
            assert first.orgs.settings(org).program_name == "before"
            first.commit()
        with SqlUnitOfWork(connection=conn, org_memo=memo) as second:
            assert second.orgs.settings(org).program_name == "before"  # from the memo
            second.orgs.replace_settings(org, {"program_name": "after"})
            second.commit()
        with SqlUnitOfWork(connection=conn, org_memo=memo) as third:
            assert third.orgs.settings(org).program_name == "after"


def test_a_contacts_addresses_include_one_added_in_the_same_unit_of_work(sqlite_engine: Engine) -> None:
    with SqlUnitOfWork(sqlite_engine) as uow:
        org = uow.orgs.create("Acme", NOW)
        contact = uow.contacts.create(org, NOW, name="Sam")
        uow.contacts.add_address(org, contact, "phone", "+14155552671")
        assert [a.value for a in uow.contacts.addresses(contact)] == ["+14155552671"]
        uow.contacts.add_address(org, contact, "email", "sam@example.com")
        assert [a.value for a in uow.contacts.addresses(contact)] == ["+14155552671", "sam@example.com"]


def test_a_contacts_addresses_show_phone_flags_set_in_the_same_unit_of_work(sqlite_engine: Engine) -> None:
    """Flags set to what they already are change no row (and keep what was read); any other
    value is written and read back."""
    with SqlUnitOfWork(sqlite_engine) as uow:
        org = uow.orgs.create("Acme", NOW)
        contact = uow.contacts.create(org, NOW, name="Sam")
        uow.contacts.add_address(org, contact, "phone", "+14155552671")
        flags = [(a.active, a.do_not_call) for a in uow.contacts.addresses(contact)]
        uow.contacts.set_phone_flags(org, "+14155552671", active=flags[0][0], do_not_call=flags[0][1])
        assert [(a.active, a.do_not_call) for a in uow.contacts.addresses(contact)] == flags
        for active, do_not_call in ((True, False), (False, True), (False, False), (True, True)):
            uow.contacts.set_phone_flags(org, "+14155552671", active=active, do_not_call=do_not_call)
            assert [(a.active, a.do_not_call) for a in uow.contacts.addresses(contact)] == [(active, do_not_call)]


def test_a_contacts_enrolments_reflect_every_change_in_the_same_unit_of_work(sqlite_engine: Engine) -> None:
    with SqlUnitOfWork(sqlite_engine) as uow:
        org = uow.orgs.create("Acme", NOW)
        contact = uow.contacts.create(org, NOW, name="Sam")
        first = uow.enrollments.create(org, contact, "drip", "v1", {}, NOW)
        assert [r.id for r in uow.enrollments.for_contact(contact)] == [first]
        second = uow.enrollments.create(org, contact, "other", "v1", {}, NOW)
        assert [r.id for r in uow.enrollments.for_contact(contact)] == [first, second]
        uow.enrollments.pause(first, "do not disturb")
        assert [r.status for r in uow.enrollments.for_contact(contact)] == ["paused", "active"]
        assert uow.enrollments.for_contact(contact, (EnrollmentStatus.ACTIVE,))[0].id == second
        uow.enrollments.end(second, EnrollmentStatus.CANCELLED, "opted out", NOW)
        assert [r.id for r in uow.enrollments.for_contact(contact)] == [first]
        uow.enrollments.resume(first, NOW)
        assert [r.status for r in uow.enrollments.for_contact(contact)] == ["active"]
        uow.enrollments.move(first, 3, NOW)
        assert uow.enrollments.for_contact(contact)[0].pc == 3


def test_a_consent_save_writes_only_what_changed_since_it_was_read(engine: Engine) -> None:
    """A consent's save writes the columns that changed since this unit of work read it (and
    nothing when none did), so it neither rewrites the table's indexed states and dates for a
    flag nor overwrites a column it did not change."""
    from sqlalchemy import select, update

    from optflow.adapters import orm
    from optflow.domain.model import Channel, State

    with SqlUnitOfWork(engine) as uow:
        org = uow.orgs.create("Acme", NOW)
        consent = uow.consents.get(org, "+14155552671", Channel.TEXT)
        consent.state, consent.opted_out_at, consent.method = State.OPTED_OUT, NOW, "keyword"
        uow.consents.save(consent, NOW)
        assert consent.id is not None
        read = uow.consents.get(org, "+14155552671", Channel.TEXT, lock=True)
        # Another change to the row, not through this consent (the test stands in for one).
        uow.conn.execute(update(orm.consents).where(orm.consents.c.id == read.id).values(method="imported"))
        read.opt_out_confirmation_sent = True
        later = datetime(2026, 11, 23, 18, 5, tzinfo=UTC)
        uow.consents.save(read, later)
        row = uow.conn.execute(select(orm.consents).where(orm.consents.c.id == read.id)).mappings().one()
        assert row["opt_out_confirmation_sent"] and row["state"] == "opted_out"
        assert row["method"] == "imported"  # not written back: this consent did not change it
        assert row["updated_at"] == later
        uow.consents.save(read, datetime(2026, 11, 23, 18, 9, tzinfo=UTC))  # nothing changed: nothing written
        again = uow.conn.execute(select(orm.consents.c.updated_at).where(orm.consents.c.id == read.id)).scalar()
        assert again == later


def test_a_consent_saved_in_a_savepoint_that_rolled_back_is_written_whole_next_time(engine: Engine) -> None:
    from sqlalchemy import select

    from optflow.adapters import orm
    from optflow.domain.model import Channel, State

    with SqlUnitOfWork(engine) as uow:
        org = uow.orgs.create("Acme", NOW)
        consent = uow.consents.get(org, "+14155552671", Channel.TEXT)
        uow.consents.save(consent, NOW)
        consent = uow.consents.get(org, "+14155552671", Channel.TEXT)
        consent.state, consent.opted_out_at = State.OPTED_OUT, NOW
        try:
            with uow.savepoint():
                uow.consents.save(consent, NOW)
                raise RuntimeError("the command failed after the save")
        except RuntimeError:
            pass
        uow.consents.save(consent, NOW)  # the same change again: the row no longer has it
        state = uow.conn.execute(select(orm.consents.c.state).where(orm.consents.c.id == consent.id)).scalar()
        assert state == "opted_out"


def test_what_a_unit_of_work_reads_ahead_gives_way_to_its_own_changes(engine: Engine) -> None:
    from optflow.domain.model import Channel, State

    with SqlUnitOfWork(engine) as uow:
        org = uow.orgs.create("Acme", NOW)
        sam = uow.contacts.create(org, NOW, name="Sam")
        uow.contacts.add_address(org, sam, "phone", "+14155552671")
        uow.read_ahead([(org, "+14155552671", Channel.TEXT), (org, "+14155552672", Channel.TEXT)])
        assert uow.contacts.at_address(org, "+14155552672") is None
        assert uow.enrollments.for_contact(sam) == []
        # Changes made after the read-ahead are what later reads see.
        robin = uow.contacts.create(org, NOW, name="Robin")
        uow.contacts.add_address(org, robin, "phone", "+14155552672")
        found = uow.contacts.at_address(org, "+14155552672")
        assert found is not None and found.id == robin
        uow.contacts.update(sam, NOW, language="es")
        sam_now = uow.contacts.at_address(org, "+14155552671")
        assert sam_now is not None and sam_now.language == "es"
        first = uow.enrollments.create(org, sam, "drip", "v1", {}, NOW)
        assert [row.id for row in uow.enrollments.for_contact(sam)] == [first]
        uow.enrollments.end_many([(first, 0)], EnrollmentStatus.CANCELLED, "opted out", NOW)
        assert uow.enrollments.for_contact(sam) == []
        consent = uow.consents.get(org, "+14155552671", Channel.TEXT)
        assert consent.state is State.UNKNOWN and consent.id is None
        consent.state = State.OPTED_OUT
        uow.consents.save(consent, NOW)
        assert uow.consents.get(org, "+14155552671", Channel.TEXT).state is State.OPTED_OUT
        # A rolled-back savepoint: what was read ahead and since is read again.
        uow.read_ahead([(org, "+14155552671", Channel.TEXT)])
        try:
            with uow.savepoint():
                again = uow.consents.get(org, "+14155552671", Channel.TEXT)
                again.state = State.OPTED_IN
                uow.consents.save(again, NOW)
                uow.contacts.update(sam, NOW, language="fr")
                uow.enrollments.create(org, sam, "drip", "v1", {}, NOW)
                assert len(uow.enrollments.for_contact(sam)) == 1
                raise RuntimeError("undo")
        except RuntimeError:
            pass
        assert uow.consents.get(org, "+14155552671", Channel.TEXT).state is State.OPTED_OUT
        sam_after = uow.contacts.at_address(org, "+14155552671")
        assert sam_after is not None and sam_after.language == "es"
        assert uow.enrollments.for_contact(sam) == []  # not the enrolment that was rolled back
